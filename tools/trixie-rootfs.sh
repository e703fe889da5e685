#!/usr/bin/env bash
# Build (once) a Debian trixie root file system with debootstrap, plus extra Debian packages.
#
#   tools/trixie-rootfs.sh DIR [PACKAGE...]
#
# Used for: the local base image `debian:trixie-slim` (no extra packages, `docker import`ed by
# tools/base-image.sh) and the chroot that runs trixie's PostgreSQL 17, PgBouncer 1.24 and etcd
# on a bookworm host. Idempotent: a DIR already built with the same package list is left alone;
# a DIR built with fewer packages gets the missing ones installed.
set -euo pipefail

dir=${1:?usage: tools/trixie-rootfs.sh DIR [PACKAGE...]}
shift
packages=("$@")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
stamp="$dir/.poolwarden-rootfs"
want=$(printf '%s\n' "${packages[@]}" | sort -u | tr '\n' ' ')

log() { echo ">> trixie-rootfs: $*"; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

if [ ! -x "$dir/usr/bin/apt-get" ] || [ ! -f "$dir/.poolwarden-debootstrapped" ]; then
  log "debootstrap trixie (minbase) into $dir (about 1-2 minutes)"
  rm -rf "$dir"
  mkdir -p "$dir"
  debootstrap --variant=minbase trixie "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 || {
    tail -20 "$dir.debootstrap.log" >&2
    echo "trixie-rootfs: debootstrap failed; full log in $dir.debootstrap.log" >&2
    exit 1
  }
  # Keep the image small and quiet, like debian:*-slim.
  cat >"$dir/etc/apt/apt.conf.d/90poolwarden" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
  printf 'deb %s trixie main\ndeb %s trixie-updates main\n' "$mirror" "$mirror" >"$dir/etc/apt/sources.list"
  touch "$dir/.poolwarden-debootstrapped"
fi

if [ ${#packages[@]} -gt 0 ]; then
  log "installing into $dir: ${packages[*]}"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # Services must not start inside the chroot during installation.
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod +x "$dir/usr/sbin/policy-rc.d"
  mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
  trap 'umount "$dir/proc" 2>/dev/null || true' EXIT
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  chroot "$dir" apt-get clean
  rm -f "$dir/usr/sbin/policy-rc.d"
fi

echo "$want" >"$stamp"
log "ready: $dir"
