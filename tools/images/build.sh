#!/usr/bin/env bash
# Build the component images a kind node needs, from the binaries `make tools` built, under
# exactly the names the built kubeadm and the node image's manifests ask for.
#
#   tools/images/build.sh [LIST_FILE]
#
# kubeadm's list comes from `kubeadm config images list` (pause, etcd, coredns, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy); the node image's own manifests add the
# pod network daemon and local-path-provisioner (+ its helper). Every image is FROM
# debian:trixie-slim or scratch. The full list of references is written to LIST_FILE
# (default .cache/images/images.txt). Re-running is cheap: Docker's build cache keeps layers.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
TOOLS_BIN=${TOOLS_BIN:-$root/.tools/bin}
WORK=${IMAGES_WORK:-$root/.cache/images}
LIST=${1:-$WORK/images.txt}
export DOCKER_BUILDKIT=0

# Images referenced by tools/node-image/files/kind/manifests/*.yaml.
KIND_NET_IMAGE=poolwarden/kind-net:0.1.0
LOCAL_PATH_IMAGE=poolwarden/local-path-provisioner:v0.0.30
LOCAL_PATH_HELPER_IMAGE=poolwarden/local-path-helper:0.1.0

log() { echo ">> images: $*"; }
die() { echo "images: $*" >&2; exit 1; }

need() { for b in "$@"; do [ -x "$TOOLS_BIN/$b" ] || die "$TOOLS_BIN/$b is missing; run 'make tools' first"; done; }
need kubeadm kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl coredns local-path-provisioner pause

"$here/../base-image.sh"

kube_version=$("$TOOLS_BIN/kubeadm" version -o short)
mkdir -p "$WORK"

build() { # build TAG DOCKERFILE [FILE_TO_STAGE...] [-- BUILD_ARGS...]
  local tag=$1 dockerfile=$2; shift 2
  local ctx="$WORK/ctx-${dockerfile#Dockerfile.}"
  rm -rf "$ctx"; mkdir -p "$ctx"
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cp -p "$1" "$ctx/"; shift; done
  [ "${1:-}" = -- ] && shift
  log "building $tag"
  local out
  out=$(docker build -q -f "$here/$dockerfile" -t "$tag" "$@" "$ctx" 2>&1) || { echo "$out" >&2; die "docker build of $tag failed"; }
}

: >"$LIST.tmp"
while read -r ref; do
  [ -n "$ref" ] || continue
  name=${ref%:*}; name=${name##*/}
  case "$name" in
    kube-apiserver|kube-controller-manager|kube-scheduler)
      build "$ref" Dockerfile.control-plane "$TOOLS_BIN/$name" -- --build-arg "COMPONENT=$name" ;;
    kube-proxy) build "$ref" Dockerfile.kube-proxy "$TOOLS_BIN/kube-proxy" ;;
    coredns) build "$ref" Dockerfile.coredns "$TOOLS_BIN/coredns" ;;
    pause) build "$ref" Dockerfile.pause "$TOOLS_BIN/pause" ;;
    etcd) build "$ref" Dockerfile.etcd ;;
    *) die "kubeadm asks for $ref, which this script does not know how to build" ;;
  esac
  echo "$ref" >>"$LIST.tmp"
done < <("$TOOLS_BIN/kubeadm" config images list --kubernetes-version "$kube_version" 2>/dev/null)

build "$KIND_NET_IMAGE" Dockerfile.kind-net "$TOOLS_BIN/kubectl" "$here/kind-net/poolwarden-kind-net"
build "$LOCAL_PATH_IMAGE" Dockerfile.local-path-provisioner "$TOOLS_BIN/local-path-provisioner"
build "$LOCAL_PATH_HELPER_IMAGE" Dockerfile.local-path-helper
printf '%s\n' "$KIND_NET_IMAGE" "$LOCAL_PATH_IMAGE" "$LOCAL_PATH_HELPER_IMAGE" >>"$LIST.tmp"
mv "$LIST.tmp" "$LIST"
log "$(wc -l <"$LIST") images for Kubernetes $kube_version listed in $LIST"
