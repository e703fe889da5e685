#!/usr/bin/env bash
# Build the offline kind node image poolwarden/kind-node:<kubernetes version>.
#
#   tools/node-image/build.sh
#
# Steps (each prints a `>> node-image:` line):
#   1. component images (tools/images/build.sh) and debian:trixie-slim (tools/base-image.sh);
#   2. `docker build` of tools/node-image/Dockerfile with kubeadm, kubelet, kubectl (+ crictl);
#   3. the component images are `docker save`d and imported into the node's containerd
#      (namespace k8s.io, pinned, not unpacked) inside a container of that image, which is
#      then committed as the final image. Nothing is pulled when a cluster starts.
# Needs `make tools` (binaries in .tools/bin) and a Docker engine (tools/docker-up.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
TOOLS_BIN=${TOOLS_BIN:-$root/.tools/bin}
WORK=${NODE_IMAGE_WORK:-$root/.cache/node-image}
REPO=${NODE_IMAGE_REPO:-poolwarden/kind-node}
export DOCKER_BUILDKIT=0

log() { echo ">> node-image: $*"; }
die() { echo "node-image: $*" >&2; exit 1; }

for b in kubeadm kubelet kubectl; do
  [ -x "$TOOLS_BIN/$b" ] || die "$TOOLS_BIN/$b is missing; run 'make tools' first"
done
kube_version=$("$TOOLS_BIN/kubeadm" version -o short)
image="$REPO:$kube_version"
start=$SECONDS

mkdir -p "$WORK"
"$root/tools/images/build.sh" "$WORK/images.txt"
mapfile -t images <"$WORK/images.txt"

log "assembling the build context in $WORK/ctx"
rm -rf "$WORK/ctx"; mkdir -p "$WORK/ctx/bin"
cp -a "$here/Dockerfile" "$here/files" "$WORK/ctx/"
for b in kubeadm kubelet kubectl crictl; do
  if [ -x "$TOOLS_BIN/$b" ]; then cp -p "$TOOLS_BIN/$b" "$WORK/ctx/bin/"; fi
done
echo "$kube_version" >"$WORK/ctx/version"

# A fingerprint of everything that goes into the image: skip the whole build when unchanged.
fingerprint=$( { (cd "$WORK/ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum);
                 for i in "${images[@]}"; do echo "$i $(docker image inspect -f '{{.Id}}' "$i")"; done; } | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "io.poolwarden.fingerprint"}}' "$image" 2>/dev/null)" = "$fingerprint" ]; then
  log "$image is up to date ($fingerprint)"
  exit 0
fi

log "docker build of the node base (Debian trixie packages, systemd, containerd, node binaries)"
out=$(docker build -q -t "$REPO-base:$kube_version" "$WORK/ctx" 2>&1) || { echo "$out" >&2; die "docker build of the node base failed"; }

log "saving ${#images[@]} component images"
docker save -o "$WORK/images.tar" "${images[@]}"

builder="poolwarden-node-build-$$"
cleanup() { docker rm -f "$builder" >/dev/null 2>&1 || true; rm -f "$WORK/images.tar"; }
trap cleanup EXIT
log "importing them into the node's containerd (k8s.io namespace, pinned)"
docker run -d -t --name "$builder" --privileged --entrypoint /bin/bash "$REPO-base:$kube_version" >/dev/null
docker cp "$WORK/images.tar" "$builder:/images.tar"
docker exec "$builder" bash -ec '
  containerd >/var/log/containerd-build.log 2>&1 &
  for _ in $(seq 1 60); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done
  ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
      --all-platforms --no-unpack --digests /images.tar >/dev/null
  ctr --namespace=k8s.io images ls -q | grep -v "^sha256:" | sort >/kind/images.txt
  kill %1; wait || true
  rm -rf /images.tar /var/log/containerd-build.log /run/containerd /tmp/* /var/lib/containerd/io.containerd.runtime.*
'
missing=$(for i in "${images[@]}"; do
  case "$i" in */*.*/*|*.*/*) ref=$i ;; */*) ref=docker.io/$i ;; *) ref=docker.io/library/$i ;; esac
  docker exec "$builder" grep -qx "$ref" /kind/images.txt || echo "$ref"
done)
[ -z "$missing" ] || die "not imported into the node's containerd: $missing"

log "committing $image"
docker commit \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  --change "LABEL io.poolwarden.fingerprint=$fingerprint" \
  "$builder" "$image" >/dev/null
log "built $image in $((SECONDS - start)) s (images: $(tr '\n' ' ' <"$WORK/images.txt"))"
