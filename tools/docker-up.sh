#!/usr/bin/env bash
# Make sure a Docker engine answers; on a bare Debian host, install and start one.
#
#   tools/docker-up.sh
#
# - If `docker info` already works (Docker Desktop, a system dockerd, CI with Docker), do nothing.
# - Otherwise install Debian's docker.io (apt), install a runc wrapper that drops
#   CAP_SYS_RESOURCE from container configs (hosts whose bounding set lacks it cannot run
#   `--privileged` containers, which kind needs), make it dockerd's default runtime in
#   /etc/docker/daemon.json, start dockerd in the background (no systemd needed; log in
#   $DOCKERD_LOG) and wait until it answers.
# Idempotent; prints what it does (`>> docker-up: ...`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/poolwarden-dockerd.log}
WRAPPER=/usr/local/sbin/poolwarden-runc
DAEMON_JSON=/etc/docker/daemon.json
DATA_ROOT=${DOCKER_DATA_ROOT:-/var/lib/docker}

log() { echo ">> docker-up: $*"; }
die() { echo "docker-up: $*" >&2; exit 1; }

# Debian's client speaks the daemon's API version; a newer client elsewhere on PATH (e.g. a
# 28.x in /usr/local/bin) negotiates down by itself, so either works against this daemon.

if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
  log "a Docker engine answers already ($(docker version --format '{{.Server.Version}}' 2>/dev/null)); nothing to do"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "no Docker engine answers and installing one needs root; start Docker, or rerun as root"

# Debian's runc (a dependency of docker.io) lives in /usr/sbin.
real_runc=${POOLWARDEN_REAL_RUNC:-/usr/sbin/runc}

log "runc wrapper $WRAPPER (drops CAP_SYS_RESOURCE, then execs $real_runc)"
sed "s|^REAL_RUNC=.*|REAL_RUNC=\${POOLWARDEN_REAL_RUNC:-$real_runc}|" \
  "$here/docker/runc-without-sys-resource" >"$WRAPPER.tmp"
chmod 0755 "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"

# Docker's data root must not sit on overlayfs (containerd-in-kind would get overlay on overlay).
mkdir -p "$DATA_ROOT"
fstype=$(stat -f -c %T "$DATA_ROOT")
case "$fstype" in
  overlayfs|overlay) die "Docker data-root $DATA_ROOT is on overlayfs; set DOCKER_DATA_ROOT to a directory on ext4/xfs/btrfs" ;;
esac
log "data-root $DATA_ROOT on $fstype"

mkdir -p "$(dirname "$DAEMON_JSON")"
want=$(cat <<JSON
{
  "data-root": "$DATA_ROOT",
  "default-runtime": "poolwarden-runc",
  "runtimes": {"poolwarden-runc": {"path": "$WRAPPER"}},
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
JSON
)
if [ -f "$DAEMON_JSON" ] && [ "$(cat "$DAEMON_JSON")" != "$want" ] && [ ! -f "$DAEMON_JSON.before-poolwarden" ]; then
  log "replacing $DAEMON_JSON (old copy kept as $DAEMON_JSON.before-poolwarden)"
  cp "$DAEMON_JSON" "$DAEMON_JSON.before-poolwarden"
fi
echo "$want" >"$DAEMON_JSON"

# The wrapper and daemon.json are in place first, so a dockerd that a package script may start
# already runs with them.
if ! [ -x /usr/sbin/dockerd ] || ! [ -x "$real_runc" ] || ! command -v jq >/dev/null; then
  log "installing Debian's docker.io (apt-get)"
  apt-get update -qq
  pkgs=(docker.io jq iptables ca-certificates pigz)
  # Newer Debian releases ship the client in its own package (docker.io only recommends it).
  if apt-cache show docker-cli >/dev/null 2>&1; then pkgs+=(docker-cli); fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
docker_cli=/usr/bin/docker
[ -x "$docker_cli" ] || docker_cli=$(command -v docker) || die "no docker client found after installing docker.io"
[ -x "$real_runc" ] || die "$real_runc not found after installing docker.io; set POOLWARDEN_REAL_RUNC"

# kind nodes each run many inotify users; the kernel default of 128 instances is too few.
for kv in fs.inotify.max_user_instances=512 fs.inotify.max_user_watches=524288; do
  key=${kv%%=*}; val=${kv#*=}
  cur=$(sysctl -n "$key" 2>/dev/null || echo 0)
  if [ "$cur" -lt "$val" ]; then
    log "sysctl $kv (was $cur)"
    sysctl -qw "$kv" || log "could not set $kv (kind may hit 'too many open files')"
  fi
done

if pgrep -x dockerd >/dev/null; then
  log "dockerd runs but does not answer yet; waiting"
else
  log "starting dockerd in the background (log: $DOCKERD_LOG)"
  setsid nohup /usr/sbin/dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 60); do
  if timeout 10 "$docker_cli" info >/dev/null 2>&1; then break; fi
  sleep 1
done
timeout 10 "$docker_cli" info >/dev/null 2>&1 || { tail -20 "$DOCKERD_LOG" >&2; die "dockerd did not answer within 60 s; see $DOCKERD_LOG"; }

server=$("$docker_cli" version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')
log "dockerd $server answers; default runtime $("$docker_cli" info --format '{{.DefaultRuntime}}')"
if command -v docker >/dev/null && ! timeout 10 docker info >/dev/null 2>&1; then
  api=$("$docker_cli" version --format '{{.Server.APIVersion}}')
  log "the 'docker' on PATH ($(command -v docker)) cannot talk to this daemon; export DOCKER_API_VERSION=$api"
fi
