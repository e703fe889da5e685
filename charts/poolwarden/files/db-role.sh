#!/usr/bin/env bash
# The consumers' database role and its CONNECTION LIMIT: PostgreSQL's own backstop for the
# connection budget (no PgBouncer count, rollout or operator outage can take the role past it).
#
#   db-role.sh ensure [--once]   as the superuser: create the role and keep it in step with the
#                                config file (NOSUPERUSER LOGIN, CONNECTION LIMIT, password,
#                                idle_in_transaction_session_timeout, owner of the database);
#                                re-applies when the file changes and every PGROLE_INTERVAL s.
#   db-role.sh check             as the role itself (an external database): fail, printing the
#                                statement to run, when its limit is missing or above the
#                                budget or when it is a superuser.
#   db-role.sh ready             true once `ensure` applied the config file as it is now.
#
# Config file (PGROLE_CONFIG), one key=value a line:
#   role=<name>  database=<name>  connection_limit=<budget>
#   idle_in_transaction_session_timeout=<seconds, 0 = off>
# Environment: libpq's PGHOST, PGPORT, PGUSER, PGPASSWORD (or PGROLE_SUPERUSER_PASSWORD_FILE);
# PGROLE_PASSWORD_FILE (ensure: the role's password), PGROLE_STATE_DIR (ensure/ready: where the
# applied config is recorded), PGROLE_INTERVAL (30), PGROLE_WAIT (seconds to wait for the server,
# 600), PGROLE_PSQL (psql binary).
set -euo pipefail

log() { echo ">> db-role: $*" >&2; }
die() { log "error: $*"; exit 2; }

config=${PGROLE_CONFIG:-/etc/poolwarden/db-role/role.conf}
state_dir=${PGROLE_STATE_DIR:-/var/run/poolwarden-db-role}
interval=${PGROLE_INTERVAL:-30}
wait_seconds=${PGROLE_WAIT:-600}
psql=${PGROLE_PSQL:-$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)}
psql=${psql:-psql}
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5}
export PGAPPNAME=${PGAPPNAME:-poolwarden-db-role}

# --- the wanted state ---------------------------------------------------------------------------

read_config() {  # read_config [ensure]: sets role database limit idle; fails naming the bad value
  local key value
  role="" database="" limit="" idle=""
  [ -r "$config" ] || die "config file $config is missing or unreadable"
  while IFS='=' read -r key value || [ -n "$key" ]; do
    case $key in
      ''|'#'*) ;;
      role) role=$value ;;
      database) database=$value ;;
      connection_limit) limit=$value ;;
      idle_in_transaction_session_timeout) idle=$value ;;
      *) die "$config: unknown key '$key' (allowed: role, database, connection_limit, idle_in_transaction_session_timeout)" ;;
    esac
  done <"$config"
  [[ $role =~ ^[A-Za-z_][A-Za-z0-9_.@-]{0,62}$ ]] || die "$config: role '$role' is not a role name (letters, digits, _ . @ -)"
  [[ $database =~ ^[A-Za-z_][A-Za-z0-9_-]{0,62}$ ]] || die "$config: database '$database' is not a database name (letters, digits, _ -)"
  [[ $limit =~ ^[1-9][0-9]{0,5}$ ]] || die "$config: connection_limit '$limit' must be a positive integer (the budget)"
  if [ "${1:-}" = ensure ] && ! [[ $idle =~ ^[0-9]{1,6}$ ]]; then
    die "$config: idle_in_transaction_session_timeout '$idle' must be whole seconds (0 = off)"
  fi
}

wanted_state() {  # the role as `role_state` reports it once applied
  local idle_setting=none
  [ "$idle" -gt 0 ] && idle_setting="${idle}s"
  echo "login=t super=f createrole=f createdb=f replication=f bypassrls=f limit=$limit idle=$idle_setting owner=$role"
}

# psql with the config's names as variables (:'role' is a literal, :"role" an identifier).
q() {
  "$psql" -X -q -At -v ON_ERROR_STOP=1 -v role="$role" -v database="$database" \
    -v limit="$limit" -v idle="$idle" "$@"
}

STATE_SQL="
SELECT coalesce((
  SELECT format('login=%s super=%s createrole=%s createdb=%s replication=%s bypassrls=%s limit=%s',
                CASE WHEN r.rolcanlogin THEN 't' ELSE 'f' END, CASE WHEN r.rolsuper THEN 't' ELSE 'f' END,
                CASE WHEN r.rolcreaterole THEN 't' ELSE 'f' END, CASE WHEN r.rolcreatedb THEN 't' ELSE 'f' END,
                CASE WHEN r.rolreplication THEN 't' ELSE 'f' END, CASE WHEN r.rolbypassrls THEN 't' ELSE 'f' END,
                r.rolconnlimit)
         || ' idle=' || coalesce((SELECT substr(c, length('idle_in_transaction_session_timeout=') + 1)
                                  FROM pg_db_role_setting s, unnest(s.setconfig) AS c
                                  WHERE s.setrole = r.oid AND s.setdatabase = 0
                                    AND c LIKE 'idle\_in\_transaction\_session\_timeout=%'), 'none')
         || ' owner=' || coalesce((SELECT pg_get_userbyid(d.datdba) FROM pg_database d
                                   WHERE d.datname = :'database'), 'missing')
  FROM pg_roles r WHERE r.rolname = :'role'), 'missing')
"

role_state() { q -d postgres <<<"$STATE_SQL"; }

# --- ensure (the superuser's side) ---------------------------------------------------------------

superuser_password() {
  if [ -n "${PGROLE_SUPERUSER_PASSWORD_FILE:-}" ]; then
    PGPASSWORD=$(cat "$PGROLE_SUPERUSER_PASSWORD_FILE")
    export PGPASSWORD
  fi
}

adopt_superuser() {  # a data directory from before: the app role is the superuser, no `postgres`
  local superuser=${PGUSER:-postgres} superuser_password=${PGPASSWORD:-} role_password
  [ -n "${PGROLE_PASSWORD_FILE:-}" ] && [ -z "${adopted:-}" ] || return 1
  adopted=1  # once per start: never a loop of password changes
  read_config ensure
  [ "$role" != "$superuser" ] || return 1
  role_password=$(cat "$PGROLE_PASSWORD_FILE")
  # Fails (and changes nothing) unless the app role can log in and is a superuser.
  PGUSER=$role PGPASSWORD=$role_password PGROLE_NEW_PASSWORD=$superuser_password \
    q -d postgres -v superuser="$superuser" >/dev/null 2>&1 <<'SQL' || return 1
SELECT rolsuper AS app_is_superuser FROM pg_roles WHERE rolname = current_user \gset
\if :app_is_superuser
\getenv password PGROLE_NEW_PASSWORD
SELECT format('CREATE ROLE %I SUPERUSER LOGIN', :'superuser') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'superuser') \gexec
ALTER ROLE :"superuser" WITH SUPERUSER LOGIN PASSWORD :'password';
\else
SELECT 1/0;
\endif
SQL
  log "superuser $superuser created with the Secret's password, by the app role $role (a superuser until now)"
}

wait_for_server() {
  local deadline=$((SECONDS + wait_seconds)) out
  until out=$("$psql" -X -q -At -d postgres -c 'SELECT 1' 2>&1); do
    case $out in
      *"password authentication failed"*|*"does not exist"*) adopt_superuser && continue ;;
    esac
    if [ $SECONDS -ge $deadline ]; then
      die "PostgreSQL at ${PGHOST:-localhost}:${PGPORT:-5432} did not accept ${PGUSER:-postgres} within ${wait_seconds}s: $out"
    fi
    sleep 2
  done
}

apply() {  # apply [password]: idempotent statements bringing the role to the wanted state
  local idle_sql="ALTER ROLE :\"role\" RESET idle_in_transaction_session_timeout;"
  [ "$idle" -gt 0 ] && idle_sql="ALTER ROLE :\"role\" SET idle_in_transaction_session_timeout = '${idle}s';"
  {
    echo "SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \\gexec"
    echo "ALTER ROLE :\"role\" WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS CONNECTION LIMIT :limit;"
    echo "$idle_sql"
    echo "SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \\gexec"
    echo "ALTER DATABASE :\"database\" OWNER TO :\"role\";"
    if [ -n "${1:-}" ]; then
      echo "\\getenv password PGROLE_NEW_PASSWORD"
      echo "ALTER ROLE :\"role\" PASSWORD :'password';"
    fi
  } | PGROLE_NEW_PASSWORD=${1:-} q -d postgres >/dev/null
}

bootstrap_check() {  # the role initdb made (oid 10) can never lose SUPERUSER: say what to do
  local bootstrap
  bootstrap=$(q -d postgres <<<"SELECT count(*) FROM pg_roles WHERE rolname = :'role' AND oid = 10")
  [ "$bootstrap" = 0 ] || die "role $role is this data directory's bootstrap superuser (initdb ran with POSTGRES_USER=$role, as charts before the role limit did): PostgreSQL cannot take SUPERUSER from it, so its CONNECTION LIMIT would be ignored. Dump the database (pg_dump -U $role), install into an empty volume and restore (docs/chart.md, 'Upgrading a release made before the role limit')"
}

password_sum_file() { echo "$state_dir/password.sha256"; }

ensure_round() {  # one pass: apply what differs, record what was applied
  local password="" password_sum="" applied_sum="" current wanted
  read_config ensure
  mkdir -p "$state_dir"
  if [ -n "${PGROLE_PASSWORD_FILE:-}" ]; then
    password=$(cat "$PGROLE_PASSWORD_FILE")
    [ -n "$password" ] || die "$PGROLE_PASSWORD_FILE is empty: the role needs a password"
    password_sum=$(printf '%s' "$password" | sha256sum | cut -d' ' -f1)
  fi
  [ -f "$(password_sum_file)" ] && applied_sum=$(cat "$(password_sum_file)")
  current=$(role_state)
  wanted=$(wanted_state)
  bootstrap_check
  if [ "$password_sum" != "$applied_sum" ]; then
    apply "$password"
    (umask 077; echo "$password_sum" >"$(password_sum_file)")
    log "role $role: $(if [ "$current" = missing ]; then echo created; else echo "was $current"; fi); now $wanted${password:+ (password set)}"
  elif [ "$current" != "$wanted" ]; then
    apply ""
    log "role $role: was $current; now $wanted"
  fi
  current=$(role_state)
  [ "$current" = "$wanted" ] || die "role $role is $current after applying, wanted $wanted"
  cp -f "$config" "$state_dir/applied.conf.tmp"
  mv -f "$state_dir/applied.conf.tmp" "$state_dir/applied.conf"
}

ensure() {  # ensure [--once]
  local seen="" now next
  # The sidecar is its container's first process: without a trap it would ignore SIGTERM and
  # hold the PostgreSQL pod for its whole grace period.
  trap 'exit 0' TERM INT
  superuser_password
  rm -f "$state_dir/applied.conf" "$(password_sum_file)"
  wait_for_server
  ensure_round
  [ "${1:-}" = --once ] && return 0
  seen=$(cat "$config" "${PGROLE_PASSWORD_FILE:-/dev/null}" | sha256sum)
  next=$((SECONDS + interval))
  while true; do
    sleep 1
    now=$(cat "$config" "${PGROLE_PASSWORD_FILE:-/dev/null}" 2>/dev/null | sha256sum) || now=""
    if [ "$now" != "$seen" ] || [ $SECONDS -ge $next ]; then
      seen=$now
      next=$((SECONDS + interval))
      # A failed round (server restarting, bad config) is logged, marks the sidecar not ready
      # and is retried within 5 s; it never ends the loop.
      if ! (ensure_round); then
        rm -f "$state_dir/applied.conf"
        next=$((SECONDS + 5))
      fi
    fi
  done
}

# --- check (the role's own side, for a database the chart does not run) -------------------------

check() {
  local row rolsuper rolconnlimit statement problems=()
  read_config
  local deadline=$((SECONDS + ${PGROLE_WAIT:-120}))
  until row=$(q -F ' ' -d "${PGDATABASE:-$database}" 2>&1 <<<"
      SELECT rolsuper, rolconnlimit, current_user = :'role' FROM pg_roles WHERE rolname = current_user"); do
    [ $SECONDS -lt $deadline ] || die "cannot connect to ${PGHOST:-localhost}:${PGPORT:-5432} as ${PGUSER:-}: $row"
    sleep 2
  done
  read -r rolsuper rolconnlimit same <<<"$row"
  [ "$same" = t ] || die "connected as ${PGUSER:-?}, but the config names role $role"
  statement="ALTER ROLE \"$role\" CONNECTION LIMIT $limit;"
  [ "$rolsuper" = t ] && statement="ALTER ROLE \"$role\" NOSUPERUSER CONNECTION LIMIT $limit;" &&
    problems+=("role $role is a superuser: PostgreSQL does not apply CONNECTION LIMIT to superusers and superuser_reserved_connections no longer protects admins")
  if [ "$rolconnlimit" -lt 0 ]; then
    problems+=("role $role has no CONNECTION LIMIT (rolconnlimit -1): PostgreSQL does not enforce the budget of $limit")
  elif [ "$rolconnlimit" -gt "$limit" ]; then
    problems+=("role $role has CONNECTION LIMIT $rolconnlimit, above the budget of $limit")
  fi
  if [ ${#problems[@]} -gt 0 ]; then
    for p in "${problems[@]}"; do log "error: $p"; done
    log "run as an administrator of the database: $statement"
    exit 1
  fi
  if [ "$rolconnlimit" -lt "$limit" ]; then
    log "note: role $role has CONNECTION LIMIT $rolconnlimit, below the budget of $limit (safe; raise it with: $statement)"
  fi
  log "ok: role $role is not a superuser and has CONNECTION LIMIT $rolconnlimit (budget $limit)"
}

# --- ready (readinessProbe of the ensure sidecar) --------------------------------------------------

ready() {
  [ -f "$state_dir/applied.conf" ] && [ "$(cat "$state_dir/applied.conf")" = "$(cat "$config")" ]
}

case ${1:-} in
  ensure) ensure "${2:-}" ;;
  check) check ;;
  ready) ready ;;
  *) die "usage: db-role.sh ensure [--once] | check | ready" ;;
esac
