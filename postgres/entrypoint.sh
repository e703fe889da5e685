#!/usr/bin/env bash
# First start: initdb with SCRAM-SHA-256 and the POSTGRES_* contract of the official image;
# then run the server in the foreground (SIGINT = fast shutdown).
set -euo pipefail
log() { echo ">> postgres-entrypoint: $*" >&2; }

if [ "${1:-postgres}" != postgres ]; then exec "$@"; fi
shift || true

user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
: "${PGDATA:=/var/lib/postgresql/data}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    log "error: set POSTGRES_PASSWORD (the superuser's password; this image has no trust mode)"
    exit 1
  fi
  log "initdb $PGDATA (superuser $user, database $db, SCRAM-SHA-256)"
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 \
    --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$pwfile"
  printf "host all all all scram-sha-256\n" >>"$PGDATA/pg_hba.conf"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.auto.conf"
  if [ "$db" != postgres ]; then
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$db";
SQL
  fi
fi

exec postgres -D "$PGDATA" "$@"
