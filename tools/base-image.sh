#!/usr/bin/env bash
# Make sure the local Docker has `debian:trixie-slim`, the base of every poolwarden image.
#
#   tools/base-image.sh
#
# 1. present already -> nothing to do;
# 2. a container registry answers -> `docker pull debian:trixie-slim`;
# 3. offline -> debootstrap a minimal trixie root (tools/trixie-rootfs.sh, no extra packages),
#    tar it and `docker import` it under the same name, so the project's Dockerfiles build
#    unchanged.
# Idempotent; prints what it does (`>> base-image: ...`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
IMAGE=${BASE_IMAGE:-debian:trixie-slim}
ROOTFS=${BASE_ROOTFS:-$root/.tools/trixie-base}
PULL_TIMEOUT=${BASE_IMAGE_PULL_TIMEOUT:-30}

log() { echo ">> base-image: $*"; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE present"
  exit 0
fi

if [ "${POOLWARDEN_OFFLINE:-}" != 1 ] && timeout "$PULL_TIMEOUT" docker pull -q "$IMAGE" >/dev/null 2>&1; then
  log "pulled $IMAGE from a registry"
  exit 0
fi

log "no container registry answers: building $IMAGE offline with debootstrap (offline path)"
"$here/trixie-rootfs.sh" "$ROOTFS"

tarball="$ROOTFS.tar"
log "packing $ROOTFS (without /proc, /sys, /dev contents, apt lists, caches)"
tar --numeric-owner --xattrs --acls -C "$ROOTFS" -cf "$tarball" \
  --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* \
  --exclude=./var/lib/apt/lists/* --exclude=./var/cache/apt/* \
  --exclude=./.poolwarden-rootfs --exclude=./.poolwarden-debootstrapped .
# Image config like the official one: bash as the default command, a sane PATH.
docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --message "debian trixie minbase built by tools/base-image.sh" \
  "$tarball" "$IMAGE" >/dev/null
rm -f "$tarball"
log "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
