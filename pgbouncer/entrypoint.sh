#!/usr/bin/env bash
# PgBouncer entrypoint: render the static config, run PgBouncer, apply sizing changes with
# RELOAD (never a restart), and shut down safely on SIGTERM. Environment: see README.md.
set -euo pipefail

log() { echo ">> pgbouncer-entrypoint: $*" >&2; }
die() { log "error: $*"; exit 2; }

conf_dir=${PGBOUNCER_CONF_DIR:-/var/lib/pgbouncer}
sizing_dir=${PGBOUNCER_SIZING_DIR:-/etc/pgbouncer/sizing}
template=${PGBOUNCER_TEMPLATE:-/etc/pgbouncer/pgbouncer.ini.tmpl}
interval=${PGBOUNCER_WATCH_INTERVAL:-1}
listen_port=${PGBOUNCER_LISTEN_PORT:-6432}
admin_host=${PGBOUNCER_ADMIN_HOST:-127.0.0.1}
admin_user=${PGBOUNCER_ADMIN_USER:-pgbouncer_admin}
stats_user=${PGBOUNCER_STATS_USER:-pgbouncer_stats}
reconnect_on_lower=${PGBOUNCER_RECONNECT_ON_LOWER:-1}
shutdown_delay=${PGBOUNCER_SHUTDOWN_DELAY:-0}
psql=${PGBOUNCER_PSQL:-$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)}
sizing_keys="default_pool_size max_client_conn max_db_connections reserve_pool_size"

: "${PGBOUNCER_DB_HOST:?set PGBOUNCER_DB_HOST to the PostgreSQL host}"
: "${PGBOUNCER_DB_NAME:?set PGBOUNCER_DB_NAME to the database PgBouncer serves}"
: "${PGBOUNCER_DB_USER:?set PGBOUNCER_DB_USER to the application role}"
: "${PGBOUNCER_DB_PASSWORD:?set PGBOUNCER_DB_PASSWORD (from a Secret)}"
: "${PGBOUNCER_ADMIN_PASSWORD:?set PGBOUNCER_ADMIN_PASSWORD (from a Secret)}"
: "${PGBOUNCER_STATS_PASSWORD:?set PGBOUNCER_STATS_PASSWORD (from a Secret)}"

# --- rendering (deterministic: same environment, same bytes) ---------------------------------

sed_value() {  # escape a value for the right-hand side of a sed s||| command
  case $1 in *$'\n'*) die "configuration values must not contain newlines";; esac
  printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'
}

render_ini() {
  sed -e "s|@DB_HOST@|$(sed_value "$PGBOUNCER_DB_HOST")|g" \
      -e "s|@DB_PORT@|$(sed_value "${PGBOUNCER_DB_PORT:-5432}")|g" \
      -e "s|@DB_NAME@|$(sed_value "$PGBOUNCER_DB_NAME")|g" \
      -e "s|@LISTEN_ADDR@|$(sed_value "${PGBOUNCER_LISTEN_ADDR:-0.0.0.0}")|g" \
      -e "s|@LISTEN_PORT@|$(sed_value "$listen_port")|g" \
      -e "s|@CONF_DIR@|$(sed_value "$conf_dir")|g" \
      -e "s|@ADMIN_USER@|$(sed_value "$admin_user")|g" \
      -e "s|@STATS_USER@|$(sed_value "$stats_user")|g" \
      -e "s|@MAX_PREPARED_STATEMENTS@|$(sed_value "${PGBOUNCER_MAX_PREPARED_STATEMENTS:-200}")|g" \
      -e "s|@SERVER_LIFETIME@|$(sed_value "${PGBOUNCER_SERVER_LIFETIME:-3600}")|g" \
      -e "s|@SERVER_IDLE_TIMEOUT@|$(sed_value "${PGBOUNCER_SERVER_IDLE_TIMEOUT:-60}")|g" \
      -e "s|@QUERY_WAIT_TIMEOUT@|$(sed_value "${PGBOUNCER_QUERY_WAIT_TIMEOUT:-30}")|g" \
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

fallback_sizing() {  # conservative limits until the operator's sizing.ini is mounted
  echo "; fallback sizing from the environment: no valid $sizing_dir/sizing.ini yet"
  echo "default_pool_size = ${PGBOUNCER_DEFAULT_POOL_SIZE:-5}"
  echo "max_client_conn = ${PGBOUNCER_MAX_CLIENT_CONN:-1000}"
  echo "max_db_connections = ${PGBOUNCER_MAX_DB_CONNECTIONS:-10}"
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

last_error=""
desired_sizing() {  # desired_sizing [FILE]: the sizing include PgBouncer should have now
  local file=${1:-$sizing_dir/sizing.ini} reason
  if [ -f "$file" ]; then
    if reason=$(check_sizing "$file"); then
      last_error=""
      cat "$file"
      return
    fi
    report "$sizing_dir/sizing.ini is not usable ($reason); keeping the current sizing. Fix the file."
    if [ -f "$conf_dir/sizing.ini" ]; then cat "$conf_dir/sizing.ini"; return; fi
  fi
  fallback_sizing
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

apply_sizing() {
  local current=$conf_dir/sizing.ini previous=$conf_dir/sizing.ini.previous
  local mounted=$sizing_dir/sizing.ini seen=$conf_dir/sizing.ini.seen
  # Cheap check first (one cmp per round): nothing to do while the mounted bytes are unchanged.
  if [ ! -f "$mounted" ]; then
    [ -f "$seen" ] && report "$mounted disappeared; keeping the current sizing"
    return 0
  fi
  cmp -s "$mounted" "$seen" && return 0
  cp -f "$mounted" "$seen"
  [ -f "$current" ] && cp -f "$current" "$previous"
  # A redirection, not a pipe: desired_sizing must run in this shell to remember last_error.
  desired_sizing "$seen" >"$conf_dir/sizing.ini.desired"
  write_if_changed "$current" <"$conf_dir/sizing.ini.desired" || return 0
  log "sizing changed: $(grep -v '^;' "$current" | tr '\n' ' ')"
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
desired_sizing >"$conf_dir/sizing.ini.desired"
write_if_changed "$conf_dir/sizing.ini" <"$conf_dir/sizing.ini.desired" || true
log "starting $(pgbouncer --version | head -1) on port $listen_port; sizing: $(grep -v '^;' "$conf_dir/sizing.ini" | tr '\n' ' ')"

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
