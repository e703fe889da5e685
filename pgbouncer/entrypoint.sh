#!/usr/bin/env bash
# PgBouncer entrypoint: render the static config, run PgBouncer, apply sizing changes with
# RELOAD (never a restart), and shut down safely on SIGTERM. Environment: see README.md.
set -euo pipefail

log() { echo ">> pgbouncer-entrypoint: $*" >&2; }
die() { log "error: $*"; exit 2; }

conf_dir=${PGBOUNCER_CONF_DIR:-/var/lib/pgbouncer}
sizing_dir=${PGBOUNCER_SIZING_DIR:-/etc/pgbouncer/sizing}
fallback_dir=${PGBOUNCER_FALLBACK_DIR:-/etc/pgbouncer/fallback}
template=${PGBOUNCER_TEMPLATE:-/etc/pgbouncer/pgbouncer.ini.tmpl}
interval=${PGBOUNCER_WATCH_INTERVAL:-1}
admin_host=${PGBOUNCER_ADMIN_HOST:-127.0.0.1}
reconnect_on_lower=${PGBOUNCER_RECONNECT_ON_LOWER:-1}
psql=${PGBOUNCER_PSQL:-$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)}
sizing_keys="default_pool_size max_client_conn max_db_connections reserve_pool_size"

: "${PGBOUNCER_DB_HOST:?set PGBOUNCER_DB_HOST to the PostgreSQL host}"
: "${PGBOUNCER_DB_NAME:?set PGBOUNCER_DB_NAME to the database PgBouncer serves}"
: "${PGBOUNCER_DB_USER:?set PGBOUNCER_DB_USER to the application role}"
: "${PGBOUNCER_DB_PASSWORD:?set PGBOUNCER_DB_PASSWORD (from a Secret)}"
: "${PGBOUNCER_ADMIN_PASSWORD:?set PGBOUNCER_ADMIN_PASSWORD (from a Secret)}"
: "${PGBOUNCER_STATS_PASSWORD:?set PGBOUNCER_STATS_PASSWORD (from a Secret)}"
# Defaults of the rendered settings, assigned to the variables themselves so that the checks
# below name the variable to fix.
: "${PGBOUNCER_DB_PORT:=5432}" "${PGBOUNCER_LISTEN_ADDR:=0.0.0.0}" "${PGBOUNCER_LISTEN_PORT:=6432}"
: "${PGBOUNCER_ADMIN_USER:=pgbouncer_admin}" "${PGBOUNCER_STATS_USER:=pgbouncer_stats}"
: "${PGBOUNCER_MAX_PREPARED_STATEMENTS:=200}" "${PGBOUNCER_SERVER_LIFETIME:=3600}"
: "${PGBOUNCER_SERVER_IDLE_TIMEOUT:=60}" "${PGBOUNCER_QUERY_WAIT_TIMEOUT:=30}"
: "${PGBOUNCER_IDLE_TRANSACTION_TIMEOUT:=60}" "${PGBOUNCER_SHUTDOWN_DELAY:=0}"
PGBOUNCER_CONF_DIR=$conf_dir
listen_port=$PGBOUNCER_LISTEN_PORT
admin_user=$PGBOUNCER_ADMIN_USER
stats_user=$PGBOUNCER_STATS_USER
shutdown_delay=$PGBOUNCER_SHUTDOWN_DELAY

# --- input guard: every value is checked here, in the main shell, before anything is written --

no_newline() {  # no_newline VAR...: a newline would add lines to pgbouncer.ini or userlist.txt
  local name
  for name; do
    case ${!name-} in *$'\n'*|*$'\r'*) die "$name must not contain a newline";; esac
  done
}

matches() {  # matches 'what it must be' REGEX VAR...
  local what=$1 regex=$2 name
  shift 2
  for name; do
    [ -z "${!name+set}" ] || [[ ${!name} =~ $regex ]] ||
      die "$name must be $what (got '${!name}')"
  done
}

check_input() {
  no_newline PGBOUNCER_DB_HOST PGBOUNCER_DB_PORT PGBOUNCER_DB_NAME PGBOUNCER_DB_USER \
    PGBOUNCER_DB_PASSWORD PGBOUNCER_ADMIN_USER PGBOUNCER_ADMIN_PASSWORD PGBOUNCER_STATS_USER \
    PGBOUNCER_STATS_PASSWORD PGBOUNCER_LISTEN_ADDR PGBOUNCER_CONF_DIR
  matches "a whole number" '^[0-9]{1,9}$' PGBOUNCER_DB_PORT PGBOUNCER_LISTEN_PORT \
    PGBOUNCER_MAX_PREPARED_STATEMENTS PGBOUNCER_SERVER_LIFETIME PGBOUNCER_SERVER_IDLE_TIMEOUT \
    PGBOUNCER_QUERY_WAIT_TIMEOUT PGBOUNCER_IDLE_TRANSACTION_TIMEOUT PGBOUNCER_SHUTDOWN_DELAY \
    PGBOUNCER_MAX_CLIENT_CONN PGBOUNCER_RESERVE_POOL_SIZE
  matches "a whole number >= 1" '^0*[1-9][0-9]{0,8}$' PGBOUNCER_DEFAULT_POOL_SIZE \
    PGBOUNCER_MAX_DB_CONNECTIONS
  # Values inside PgBouncer's connection string and [databases] line: one word, no spaces,
  # quotes, '=' or ';', so no value can add a parameter (such as a per-database pool_size).
  matches "a host name or IP address" '^[A-Za-z0-9][A-Za-z0-9._:-]*$' PGBOUNCER_DB_HOST
  matches "a plain name (letters, digits, _ . $ -)" '^[A-Za-z0-9_][A-Za-z0-9_.$-]*$' \
    PGBOUNCER_DB_NAME PGBOUNCER_ADMIN_USER PGBOUNCER_STATS_USER
  matches "addresses PgBouncer can listen on (e.g. 0.0.0.0, *, 127.0.0.1)" \
    '^[A-Za-z0-9.:*,_-]+$' PGBOUNCER_LISTEN_ADDR
  matches "an absolute path" '^/[A-Za-z0-9_./-]*$' PGBOUNCER_CONF_DIR
}
check_input

# --- rendering (deterministic: same environment, same bytes) ---------------------------------

sed_value() {  # escape a value for the right-hand side of a sed s||| command; newlines, which
  # sed cannot take there, were ruled out by check_input (in the main shell: a `die` in here
  # would only leave the command substitution)
  printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'
}

render_ini() {
  sed -e "s|@DB_HOST@|$(sed_value "$PGBOUNCER_DB_HOST")|g" \
      -e "s|@DB_PORT@|$(sed_value "$PGBOUNCER_DB_PORT")|g" \
      -e "s|@DB_NAME@|$(sed_value "$PGBOUNCER_DB_NAME")|g" \
      -e "s|@LISTEN_ADDR@|$(sed_value "$PGBOUNCER_LISTEN_ADDR")|g" \
      -e "s|@LISTEN_PORT@|$(sed_value "$PGBOUNCER_LISTEN_PORT")|g" \
      -e "s|@CONF_DIR@|$(sed_value "$conf_dir")|g" \
      -e "s|@ADMIN_USER@|$(sed_value "$admin_user")|g" \
      -e "s|@STATS_USER@|$(sed_value "$stats_user")|g" \
      -e "s|@MAX_PREPARED_STATEMENTS@|$(sed_value "$PGBOUNCER_MAX_PREPARED_STATEMENTS")|g" \
      -e "s|@SERVER_LIFETIME@|$(sed_value "$PGBOUNCER_SERVER_LIFETIME")|g" \
      -e "s|@SERVER_IDLE_TIMEOUT@|$(sed_value "$PGBOUNCER_SERVER_IDLE_TIMEOUT")|g" \
      -e "s|@QUERY_WAIT_TIMEOUT@|$(sed_value "$PGBOUNCER_QUERY_WAIT_TIMEOUT")|g" \
      -e "s|@IDLE_TRANSACTION_TIMEOUT@|$(sed_value "$PGBOUNCER_IDLE_TRANSACTION_TIMEOUT")|g" \
      "$template"
}

userlist_line() {  # "user" "password", double quotes doubled as PgBouncer's parser expects
  printf '"%s" "%s"\n' "${1//\"/\"\"}" "${2//\"/\"\"}"
}

render_userlist() {  # sorted by user name so the bytes are stable
  {
    userlist_line "$PGBOUNCER_DB_USER" "$PGBOUNCER_DB_PASSWORD"
    userlist_line "$admin_user" "$PGBOUNCER_ADMIN_PASSWORD"
    userlist_line "$stats_user" "$PGBOUNCER_STATS_PASSWORD"
  } | LC_ALL=C sort
}

builtin_sizing() {  # the last resort: 1 server connection, within every budget the chart accepts
  echo "; built-in fallback sizing: no valid $fallback_dir/sizing.ini"
  echo "default_pool_size = ${PGBOUNCER_DEFAULT_POOL_SIZE:-1}"
  echo "max_client_conn = ${PGBOUNCER_MAX_CLIENT_CONN:-1000}"
  echo "max_db_connections = ${PGBOUNCER_MAX_DB_CONNECTIONS:-1}"
  echo "reserve_pool_size = ${PGBOUNCER_RESERVE_POOL_SIZE:-0}"
}

sizing_value() {  # sizing_value FILE KEY -> integer (empty if absent)
  sed -n -E "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*([0-9]+)[[:space:]]*$/\1/p" "$1" | tail -1
}

check_sizing() {  # prints the reason and fails when FILE is not a usable sizing include
  local file=$1 key value bad
  bad=$(grep -v -E '^[[:space:]]*([;#].*)?$' "$file" |
        grep -v -E "^[[:space:]]*(${sizing_keys// /|})[[:space:]]*=[[:space:]]*[0-9]+[[:space:]]*$" |
        head -1) || true
  [ -z "$bad" ] || { echo "unexpected line: $bad (allowed: $sizing_keys = <integer>)"; return 1; }
  for key in $sizing_keys; do
    value=$(sizing_value "$file" "$key")
    [ -n "$value" ] || { echo "missing $key"; return 1; }
  done
  for key in default_pool_size max_db_connections; do
    [ "$(sizing_value "$file" "$key")" -ge 1 ] || { echo "$key must be >= 1"; return 1; }
  done
}

write_if_changed() {  # write_if_changed FILE < content; fails (status 1) when unchanged
  local file=$1 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; return 1; fi
  chmod 600 "$tmp"
  mv -f "$tmp" "$file"
}

# --- the sizing include and its application --------------------------------------------------

# Three sources, first usable wins: the operator's sizing.ini ($sizing_dir, written for the
# current plan), the chart's fallback sizing.ini ($fallback_dir, an equal slice of the budget,
# used until the operator's first file), the built-in default. Copies of the bytes last seen
# of each mounted file sit in $conf_dir, so a round costs one cmp while nothing changed.
operator_file=$sizing_dir/sizing.ini
operator_seen=$conf_dir/operator-sizing.ini.seen
fallback_file=$fallback_dir/sizing.ini
fallback_seen=$conf_dir/fallback-sizing.ini.seen
current=$conf_dir/sizing.ini
last_error=""
fallback_error=""
source="built-in default"

desired_sizing() {  # the sizing include PgBouncer should have now (sets $source)
  local reason
  if [ -f "$operator_seen" ]; then
    if reason=$(check_sizing "$operator_seen"); then
      last_error=""; source="operator file"
      cat "$operator_seen"
      return
    fi
    report "$operator_file is not usable ($reason); keeping the current sizing. Fix the file."
    if [ -f "$current" ]; then cat "$current"; return; fi
  fi
  fallback_sizing
}

fallback_sizing() {  # the chart's fallback file when usable, else the built-in default
  local reason="missing"
  if [ -f "$fallback_seen" ]; then
    if reason=$(check_sizing "$fallback_seen"); then
      fallback_error=""; source="fallback file"
      cat "$fallback_seen"
      return
    fi
    reason="not usable: $reason"
  fi
  if [ "$reason" != "$fallback_error" ]; then
    log "fallback $fallback_file $reason; using the built-in default until a usable sizing file appears"
    fallback_error=$reason
  fi
  source="built-in default"
  builtin_sizing
}

report() {  # log an error once per distinct problem
  if [ "$1" != "$last_error" ]; then log "error: $1"; last_error=$1; fi
}

admin() {  # run one admin-console command
  PGPASSWORD=$PGBOUNCER_ADMIN_PASSWORD PGCONNECT_TIMEOUT=5 "$psql" -X -q -h "$admin_host" \
    -p "$listen_port" -U "$admin_user" -d pgbouncer -c "$1" >/dev/null
}

lowered() {  # lowered OLD NEW: true when any server-side limit went down
  local key old new
  for key in default_pool_size max_db_connections reserve_pool_size; do
    old=$(sizing_value "$1" "$key"); new=$(sizing_value "$2" "$key")
    [ -n "$old" ] && [ -n "$new" ] && [ "$new" -lt "$old" ] && return 0
  done
  return 1
}

changed() {  # changed MOUNTED SEEN: true (and SEEN updated) when MOUNTED's bytes are new
  cmp -s "$1" "$2" && return 1
  cp -f "$1" "$2"
}

apply_sizing() {
  local previous=$conf_dir/sizing.ini.previous
  # Cheap check first (one cmp per round): nothing to do while the mounted bytes are unchanged.
  if [ -f "$operator_file" ]; then
    changed "$operator_file" "$operator_seen" || return 0
  elif [ -f "$operator_seen" ]; then
    report "$operator_file disappeared; keeping the current sizing"
    return 0
  elif [ -f "$fallback_file" ]; then  # no operator file yet: follow the chart's fallback
    changed "$fallback_file" "$fallback_seen" || return 0
  else
    [ -f "$fallback_seen" ] && report "$fallback_file disappeared; keeping the current sizing"
    return 0
  fi
  [ -f "$current" ] && cp -f "$current" "$previous"
  # A redirection, not a pipe: desired_sizing must run in this shell to remember its state.
  desired_sizing >"$conf_dir/sizing.ini.desired"
  write_if_changed "$current" <"$conf_dir/sizing.ini.desired" || return 0
  log "sizing changed ($source): $(grep -v '^;' "$current" | tr '\n' ' ')"
  if admin RELOAD; then log "RELOAD done"; else log "RELOAD via console failed; sending SIGHUP"; kill -HUP "$pid"; fi
  # RELOAD alone leaves server connections above a lowered limit open while clients keep them
  # busy; RECONNECT closes each server connection when it is next released (end of its
  # transaction), so the new limit holds within one transaction's time.
  if [ "$reconnect_on_lower" = 1 ] && [ -f "$previous" ] && lowered "$previous" "$current"; then
    admin RECONNECT && log "limit lowered: RECONNECT done (excess server connections close on release)"
  fi
}

# --- start ------------------------------------------------------------------------------------

mkdir -p "$conf_dir"
umask 077
render_ini | write_if_changed "$conf_dir/pgbouncer.ini" || true
render_userlist | write_if_changed "$conf_dir/userlist.txt" || true
rm -f "$operator_seen" "$fallback_seen"  # a restarted container starts from what is mounted now
[ -f "$operator_file" ] && cp -f "$operator_file" "$operator_seen"
[ -f "$fallback_file" ] && cp -f "$fallback_file" "$fallback_seen"
desired_sizing >"$conf_dir/sizing.ini.desired"
write_if_changed "$current" <"$conf_dir/sizing.ini.desired" || true
log "starting $(pgbouncer --version | head -1) on port $listen_port; sizing ($source): $(grep -v '^;' "$current" | tr '\n' ' ')"

pgbouncer "$conf_dir/pgbouncer.ini" &
pid=$!

stopping=0
on_term() {
  if [ "$stopping" = 1 ]; then
    log "second stop signal: immediate shutdown"; kill -INT "$pid" 2>/dev/null || true; return
  fi
  stopping=1
  log "stop signal: safe shutdown in ${shutdown_delay}s (no new connections, in-flight transactions finish)"
  sleep "$shutdown_delay"
  kill -INT "$pid" 2>/dev/null || true
}
trap on_term TERM INT

while kill -0 "$pid" 2>/dev/null; do
  sleep "$interval" & wait $! || true
  if [ "$stopping" = 0 ] && kill -0 "$pid" 2>/dev/null; then apply_sizing || log "sizing not applied; will retry"; fi
done
set +e
wait "$pid"
status=$?
log "pgbouncer exited with status $status"
exit "$status"
