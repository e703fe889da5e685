#!/usr/bin/env bash
# PgBouncer entrypoint: render the static config, run PgBouncer, apply sizing changes with
# RELOAD (never a restart), and shut down safely on SIGTERM. Environment: see README.md.
#
#   entrypoint.sh                      run PgBouncer (the image's entrypoint)
#   entrypoint.sh --check-sizing FILE  only check a sizing include: print why it is not usable
#                                      and exit 1, or print its limits and exit 0
set -euo pipefail

log() { echo ">> pgbouncer-entrypoint: $*" >&2; }
die() { log "error: $*"; exit 2; }

# --- the sizing include: the format src/poolwarden/pgbouncer_ini.py renders -------------------
#
#   ; comment lines (; or #) and blank lines anywhere
#   default_pool_size = 18          the five global keys, each once, "KEY = <integer>"
#   max_client_conn = 1000          (0 .. 2^63-1); default_pool_size,
#   max_db_connections = 20         max_db_connections and max_user_connections >= 1 (0 would
#   max_user_connections = 20       mean unlimited to PgBouncer)
#   reserve_pool_size = 2
#   [databases]                     optional, once, after the global keys (the include is the
#                                   last line of [pgbouncer]; this header switches section)
#   app = host=pg.default.svc port=5432 dbname=poolwarden pool_size=15
#
# An alias line is "NAME = host=H port=P dbname=D pool_size=N" (these four, each once, any
# order): NAME matches ^[a-z][a-z0-9_-]{0,62}$ (a consumer name) and is not "pgbouncer" (the
# admin console), H is [A-Za-z0-9.-]+, P 1 .. 65535, D [A-Za-z0-9_]+, N >= 1, every NAME once
# (an alias named like $PGBOUNCER_DB_NAME replaces the main ini's entry: the later one wins). Nothing else: no other key, section
# or parameter, no quotes or `$`. tests/unit/test_entrypoint_sizing.py checks that this parser
# and pgbouncer_ini.parse agree.
global_keys="default_pool_size max_client_conn max_db_connections max_user_connections reserve_pool_size"
server_keys="default_pool_size max_db_connections max_user_connections reserve_pool_size"
positive_keys="default_pool_size max_db_connections max_user_connections"
max_int=9223372036854775807
alias_pattern='^[a-z][a-z0-9_-]{0,62}$'
host_pattern='^[A-Za-z0-9.-]+$'
dbname_pattern='^[A-Za-z0-9_]+$'
alias_keys="host port dbname pool_size"
alias_format="host=H port=P dbname=D pool_size=N"
global_line='^([a-z_]+)[[:space:]]*=[[:space:]]*([^[:space:]]+)$'
alias_line='^([^[:space:]=]+)[[:space:]]*=[[:space:]]*(.*)$'

integer() {  # integer WHAT TEXT: prints TEXT as a plain number if it is one of 0 .. 2^63-1
  local digits
  if [[ $2 =~ ^[0-9]+$ ]]; then
    [[ $2 =~ ^0*([0-9]*)$ ]]
    digits=${BASH_REMATCH[1]:-0}
    if [ "${#digits}" -lt "${#max_int}" ] ||
       { [ "${#digits}" -eq "${#max_int}" ] && ! [[ $digits > $max_int ]]; }; then
      echo "$digits"; return 0
    fi
  fi
  echo "$1 must be an integer from 0 to $max_int, got '${2:0:40}'"
  return 1
}

parse_sizing() {  # parse_sizing FILE GLOBALS ALIASES: fills the associative arrays named
  # GLOBALS (key -> value) and ALIASES (name -> pool_size); prints the reason and fails when
  # FILE is not a usable sizing include
  local file=$1 raw line number=0 section=pgbouncer key value name item where items
  local -n globals_=$2 aliases_=$3
  local -A settings
  local LC_ALL=C
  globals_=() aliases_=()
  [ -f "$file" ] && [ -r "$file" ] || { echo "cannot read $file"; return 1; }
  while IFS= read -r raw || [ -n "$raw" ]; do
    number=$((number + 1))
    where="line $number"
    line=${raw#"${raw%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    case $line in ''|';'*|'#'*) continue;; esac
    if [[ $line == '['* ]]; then
      [ "$line" = "[databases]" ] && [ "$section" = pgbouncer ] ||
        { echo "$where: only one [databases] section may follow the limits: '${raw:0:80}'"; return 1; }
      section=databases
      continue
    fi
    if [ "$section" = pgbouncer ]; then
      if [[ $line =~ $global_line ]] && [[ " $global_keys " == *" ${BASH_REMATCH[1]} "* ]]; then
        key=${BASH_REMATCH[1]}
        [ -z "${globals_[$key]+set}" ] || { echo "$where: $key given twice"; return 1; }
        value=$(integer "$where: $key" "${BASH_REMATCH[2]}") || { echo "$value"; return 1; }
        globals_[$key]=$value
        continue
      fi
      if [[ $line =~ $alias_line ]] && [[ ${BASH_REMATCH[2]} == *host=* ]]; then
        echo "$where: the alias '${BASH_REMATCH[1]:0:63}' comes before the [databases] line"
        return 1
      fi
      echo "$where: expected KEY = <integer> with KEY one of $global_keys," \
        "or [databases]: '${raw:0:80}'"
      return 1
    fi
    [[ $line =~ $alias_line ]] ||
      { echo "$where: expected NAME = $alias_format: '${raw:0:80}'"; return 1; }
    name=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
    [[ " $global_keys " != *" $name "* ]] ||
      { echo "$where: $name belongs before the [databases] line"; return 1; }
    [[ $name =~ $alias_pattern ]] ||
      { echo "$where: alias name '${name:0:80}' must match $alias_pattern"; return 1; }
    [ "$name" != pgbouncer ] ||
      { echo "$where: alias name 'pgbouncer' is PgBouncer's admin console"; return 1; }
    [ -z "${aliases_[$name]+set}" ] || { echo "$where: alias $name given twice"; return 1; }
    settings=()
    read -r -a items <<<"$value"  # split on whitespace, no glob expansion
    for item in "${items[@]}"; do
      key=${item%%=*}
      [[ $item == *=* ]] && [[ " $alias_keys " == *" $key "* ]] || {
        echo "$where: alias $name: unexpected '${item:0:80}' (allowed: $alias_format)"
        return 1
      }
      [ -z "${settings[$key]+set}" ] || { echo "$where: alias $name: $key given twice"; return 1; }
      settings[$key]=${item#*=}
    done
    for key in $alias_keys; do
      [ -n "${settings[$key]+set}" ] || { echo "$where: alias $name is missing $key"; return 1; }
    done
    [[ ${settings[host]} =~ $host_pattern ]] ||
      { echo "$where: alias $name: host must match $host_pattern, got '${settings[host]:0:80}'"; return 1; }
    [[ ${settings[dbname]} =~ $dbname_pattern ]] ||
      { echo "$where: alias $name: dbname must match $dbname_pattern, got '${settings[dbname]:0:80}'"; return 1; }
    for key in port pool_size; do
      value=$(integer "$where: alias $name: $key" "${settings[$key]}") || { echo "$value"; return 1; }
      settings[$key]=$value
    done
    [ "${settings[port]}" -ge 1 ] && [ "${settings[port]}" -le 65535 ] ||
      { echo "$where: alias $name: port must be 1 .. 65535, got ${settings[port]}"; return 1; }
    [ "${settings[pool_size]}" -ge 1 ] ||
      { echo "$where: alias $name: pool_size must be >= 1"; return 1; }
    aliases_[$name]=${settings[pool_size]}
  done <"$file"
  for key in $global_keys; do
    [ -n "${globals_[$key]+set}" ] || { echo "missing $key"; return 1; }
  done
  for key in $positive_keys; do
    [ "${globals_[$key]}" -ge 1 ] || { echo "$key must be >= 1 (0 would mean unlimited)"; return 1; }
  done
}

check_sizing() {  # check_sizing FILE: prints the reason and fails when FILE is not usable
  local -A checked_globals checked_aliases
  parse_sizing "$1" checked_globals checked_aliases
}

summary() {  # summary FILE: the limits of a usable include on one line, for the log
  local -A summary_globals summary_aliases
  local key name out=""
  parse_sizing "$1" summary_globals summary_aliases >/dev/null || { echo "(not usable)"; return 0; }
  for key in $global_keys; do out+="$key=${summary_globals[$key]} "; done
  if [ "${#summary_aliases[@]}" -gt 0 ]; then
    out+="aliases:"
    for name in $(printf '%s\n' "${!summary_aliases[@]}" | LC_ALL=C sort); do
      out+=" $name=${summary_aliases[$name]}"
    done
  fi
  echo "${out% }"
}

if [ "${1:-}" = --check-sizing ]; then
  [ "$#" -eq 2 ] || { echo "usage: entrypoint.sh --check-sizing FILE" >&2; exit 2; }
  if reason=$(check_sizing "$2"); then
    echo "$2: usable: $(summary "$2")"
    exit 0
  fi
  echo "$2: not usable: $reason"
  exit 1
fi
[ "$#" -eq 0 ] || die "unknown arguments: $* (the only option is --check-sizing FILE)"

conf_dir=${PGBOUNCER_CONF_DIR:-/var/lib/pgbouncer}
sizing_dir=${PGBOUNCER_SIZING_DIR:-/etc/pgbouncer/sizing}
fallback_dir=${PGBOUNCER_FALLBACK_DIR:-/etc/pgbouncer/fallback}
template=${PGBOUNCER_TEMPLATE:-/etc/pgbouncer/pgbouncer.ini.tmpl}
interval=${PGBOUNCER_WATCH_INTERVAL:-1}
admin_host=${PGBOUNCER_ADMIN_HOST:-127.0.0.1}
reconnect_on_lower=${PGBOUNCER_RECONNECT_ON_LOWER:-1}
psql=${PGBOUNCER_PSQL:-$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)}

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
    PGBOUNCER_MAX_DB_CONNECTIONS PGBOUNCER_MAX_USER_CONNECTIONS
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
# The sizing include may open a [databases] section: whatever followed it in the template
# would land there. It must be the template's last setting.
[ -r "$template" ] || die "PGBOUNCER_TEMPLATE: cannot read $template"
[[ $(grep -v -E '^[[:space:]]*([;#].*)?$' "$template" | tail -1) == "%include @CONF_DIR@/sizing.ini" ]] ||
  die "$template must end with '%include @CONF_DIR@/sizing.ini' (its [databases] part switches section)"

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
  echo "max_user_connections = ${PGBOUNCER_MAX_USER_CONNECTIONS:-${PGBOUNCER_MAX_DB_CONNECTIONS:-1}}"
  echo "reserve_pool_size = ${PGBOUNCER_RESERVE_POOL_SIZE:-0}"
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

lowered() {  # lowered OLD NEW: succeeds when a server-side limit went down and prints what:
  # "*" and the key for a global limit (every pool is affected), else one line per alias whose
  # pool_size went down or that was removed, its name first
  local -A old_globals old_aliases new_globals new_aliases
  local key name out=()
  parse_sizing "$1" old_globals old_aliases >/dev/null || return 1
  parse_sizing "$2" new_globals new_aliases >/dev/null || return 1
  for key in $server_keys; do
    if [ "${new_globals[$key]}" -lt "${old_globals[$key]}" ]; then
      echo "* $key ${old_globals[$key]} -> ${new_globals[$key]}"; return 0
    fi
  done
  for name in "${!old_aliases[@]}"; do
    if [ -z "${new_aliases[$name]+set}" ]; then
      out+=("$name removed")
    elif [ "${new_aliases[$name]}" -lt "${old_aliases[$name]}" ]; then
      out+=("$name pool_size ${old_aliases[$name]} -> ${new_aliases[$name]}")
    fi
  done
  [ "${#out[@]}" -gt 0 ] || return 1
  printf '%s\n' "${out[@]}" | LC_ALL=C sort
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
  log "sizing changed ($source): $(summary "$current")"
  if admin RELOAD; then log "RELOAD done"; else log "RELOAD via console failed; sending SIGHUP"; kill -HUP "$pid"; fi
  # RELOAD alone leaves server connections above a lowered limit open while clients keep them
  # busy; RECONNECT closes each server connection when it is next released (end of its
  # transaction), so the new limit holds within one transaction's time.
  local what
  if [ "$reconnect_on_lower" = 1 ] && [ -f "$previous" ] && what=$(lowered "$previous" "$current"); then
    reconnect "$what"
  fi
}

reconnect() {  # reconnect "$(lowered OLD NEW)": RECONNECT the pools a lowered limit affects
  local line name
  if [[ $1 == '* '* ]]; then  # a global limit: every pool
    admin RECONNECT && log "limit lowered (${1#\* }): RECONNECT done (excess server connections close on release)"
    return 0
  fi
  while IFS= read -r line; do
    name=${line%% *}
    case $line in
      # RELOAD already dropped a removed alias with its clients and server connections.
      *" removed") log "alias $name removed: PgBouncer closed its connections on RELOAD";;
      # Quoted: the console takes a bare name of [a-z0-9_] only (no '-').
      *) admin "RECONNECT \"$name\"" &&
           log "alias $line: RECONNECT done (excess server connections close on release)";;
    esac
  done <<<"$1"
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
log "starting $(pgbouncer --version | head -1) on port $listen_port; sizing ($source): $(summary "$current")"

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
