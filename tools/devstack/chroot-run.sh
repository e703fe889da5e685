#!/usr/bin/env bash
# Run one command from the Debian trixie root as an unprivileged user, in a private mount
# namespace (nothing stays mounted after the command exits, the root is never modified).
#
#   tools/devstack/chroot-run.sh ROOT STATE_DIR [RO_DIR] -- COMMAND [ARG...]
#
# Inside the root: STATE_DIR is /mnt/state (read-write, owned by the root's `postgres` user),
# RO_DIR (optional) is /mnt/ro (read-only). The network is the host's: listen on 127.0.0.1.
# Only PG* (PGPASSWORD, PGBOUNCER_*, ...) and POSTGRES_* variables of the environment reach the command.
set -euo pipefail
root=$(realpath "${1:?usage: chroot-run.sh ROOT STATE_DIR [RO_DIR] -- COMMAND...}")
state=$(realpath "${2:?state dir}")
shift 2
ro=""
if [ "${1:-}" != "--" ]; then ro=$(realpath "$1"); shift; fi
[ "${1:-}" = "--" ] || { echo "chroot-run.sh: expected -- before the command" >&2; exit 2; }
shift
[ -f "$root/.poolwarden-rootfs" ] || { echo "chroot-run.sh: $root is not built; run: make trixie-root" >&2; exit 2; }

exec unshare --mount --propagation private -- bash -c '
set -euo pipefail
root=$1 state=$2 ro=$3; shift 3
mount -t tmpfs -o mode=755 poolwarden "$root/mnt"
mkdir -p "$root/mnt/state" "$root/mnt/ro"
mount --bind "$state" "$root/mnt/state"
[ -z "$ro" ] || mount --bind -o ro "$ro" "$root/mnt/ro"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
keep=()  # PG* and POSTGRES_* pass through; everything else is cleared
for name in $(compgen -e); do
  case $name in PG*|POSTGRES_*) keep+=("$name=${!name}");; esac
done
exec chroot --userspec=postgres:postgres "$root" /usr/bin/env -i \
  PATH=/usr/lib/postgresql/17/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/mnt/state LANG=C.UTF-8 \
  "${keep[@]}" "$@"
' chroot-run "$root" "$state" "$ro" "$@"
