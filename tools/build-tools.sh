#!/usr/bin/env bash
# Build the project's Kubernetes toolchain from pinned Go modules (tools/go/*/go.mod).
#
# Usage: tools/build-tools.sh GROUP...
#   kubernetes  kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kube-proxy kubectl
#   helm        helm
#   kind        kind
#   node        what the offline kind node image needs besides the above:
#               coredns, local-path-provisioner, pause
#               (crictl is not built: the module proxy does not serve sigs.k8s.io/cri-tools)
#
# Binaries land in $TOOLS_BIN (default .tools/bin). Each binary has a stamp in
# $TOOLS_DIR/stamps holding a digest of its recipe (go.mod, go.sum, toolchain, flags);
# a binary whose stamp matches is skipped, so a second run takes seconds.
# Build times are appended to $TOOLS_DIR/build-times.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
TOOLS_BIN="${TOOLS_BIN:-$TOOLS_DIR/bin}"
STAMPS="$TOOLS_DIR/stamps"
GO="${GO:-go}"
NICE="${NICE:-nice -n 10}"

# Go toolchain for every build: the one Kubernetes' release-1.32 branch builds with.
# The go command fetches it as the module golang.org/toolchain through the module proxy.
export GOTOOLCHAIN="${TOOLS_GOTOOLCHAIN:-go1.24.13}"
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

# Pinned versions (must match the go.mod files under tools/go/).
KUBE_VERSION=v1.32.2
KUBE_BUILD_DATE=2025-02-12T21:19:46Z    # release time of the k8s.io/kubernetes module version
HELM_VERSION=v3.17.3
KIND_VERSION=v0.27.0
KIND_COMMIT=6cb934219ac54aa0ddb1d8313adc05304421ccb6
COREDNS_VERSION=v1.11.3
LOCAL_PATH_VERSION=v0.0.30
PAUSE_VERSION=3.10

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kube-proxy kubectl)

log() { echo ">> $*"; }
die() { echo "error: $*" >&2; exit 1; }

mkdir -p "$TOOLS_BIN" "$STAMPS"

# recipe_digest MODULE_DIR EXTRA... -> digest of the module's pins and the build inputs.
recipe_digest() {
    local dir="$1"; shift
    { cat "$dir/go.mod" "$dir/go.sum" 2>/dev/null; printf '%s\n' "$GOTOOLCHAIN" "$CGO_ENABLED" "$GOFLAGS" "$@"; } \
        | sha256sum | cut -c1-16
}

# fresh BIN DIGEST -> true when BIN exists and its stamp holds DIGEST.
fresh() {
    [[ -x "$TOOLS_BIN/$1" && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]
}

stamp() { echo "$2" >"$STAMPS/$1"; }

timed() {  # timed LABEL CMD... : run CMD, print and record how long it took
    local label="$1"; shift
    local start=$SECONDS
    "$@"
    local took=$((SECONDS - start))
    log "$label: ${took}s"
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $label ${took}s" >>"$TOOLS_DIR/build-times.log"
}

# go_build MODULE_DIR LDFLAGS BIN=PACKAGE... : build the stale binaries of one module in a single
# `go build` (one link per package, shared compile cache).
go_build() {
    local dir="$1" ldflags="$2"; shift 2
    local digest todo=() pkgs=() pair bin pkg
    digest="$(recipe_digest "$dir" "$ldflags")"
    for pair in "$@"; do
        bin="${pair%%=*}"; pkg="${pair#*=}"
        if fresh "$bin" "$digest"; then
            log "$bin up to date ($(basename "$dir"))"
        else
            todo+=("$bin"); pkgs+=("$pkg")
        fi
    done
    ((${#todo[@]})) || return 0
    log "building ${todo[*]} from $(basename "$dir") with $GOTOOLCHAIN (CGO_ENABLED=0, nice)"
    local out
    out="$(mktemp -d "$TOOLS_DIR/build.XXXXXX")"
    (cd "$dir" && $NICE "$GO" build -ldflags "$ldflags" -o "$out/" "${pkgs[@]}") || { rm -rf "$out"; die "go build failed in $dir"; }
    local i
    for i in "${!todo[@]}"; do
        bin="${todo[$i]}"; pkg="${pkgs[$i]}"
        local built="$out/$(basename "$pkg")"
        [[ -x "$built" ]] || { rm -rf "$out"; die "go build did not produce $built"; }
        mv -f "$built" "$TOOLS_BIN/$bin"
        stamp "$bin" "$digest"
        log "installed $TOOLS_BIN/$bin"
    done
    rm -rf "$out"
}

build_kubernetes() {
    local kv="${KUBE_VERSION#v}" ld="-s -w" key val pkg
    local major="${kv%%.*}" rest="${kv#*.}"
    local minor="${rest%%.*}"
    for key in gitVersion gitMajor gitMinor gitTreeState buildDate; do
        case "$key" in
            gitVersion) val="$KUBE_VERSION" ;;
            gitMajor) val="$major" ;;
            gitMinor) val="$minor" ;;
            gitTreeState) val="archive" ;;
            buildDate) val="$KUBE_BUILD_DATE" ;;
        esac
        for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
            ld+=" -X '$pkg.$key=$val'"
        done
    done
    local args=() b
    for b in "${KUBE_BINARIES[@]}"; do args+=("$b=k8s.io/kubernetes/cmd/$b"); done
    go_build "$ROOT/tools/go/kubernetes" "$ld" "${args[@]}"
}

build_helm() {
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=archive"
    ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=32"
    ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=32"
    go_build "$ROOT/tools/go/helm" "$ld" "helm=helm.sh/helm/v3/cmd/helm"
}

build_kind() {
    go_build "$ROOT/tools/go/kind" "-s -w -X sigs.k8s.io/kind/pkg/cmd/kind/version.gitCommit=$KIND_COMMIT" \
        "kind=sigs.k8s.io/kind"
}

build_node() {
    go_build "$ROOT/tools/go/coredns" "-s -w" "coredns=poolwarden.local/tools/coredns"
    go_build "$ROOT/tools/go/local-path-provisioner" \
        "-s -w -X main.VERSION=$LOCAL_PATH_VERSION" \
        "local-path-provisioner=github.com/rancher/local-path-provisioner"
    build_pause
}

# pause: the sandbox container's init, compiled statically from the C file that ships in the
# k8s.io/kubernetes module zip (build/pause/linux/pause.c).
build_pause() {
    local src digest
    src="$(cd "$ROOT/tools/go/kubernetes" && "$GO" list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    [[ -f "$src" ]] || (cd "$ROOT/tools/go/kubernetes" && "$GO" mod download k8s.io/kubernetes)
    [[ -f "$src" ]] || die "pause.c not found at $src"
    digest="$( { cat "$src"; echo "$PAUSE_VERSION static"; } | sha256sum | cut -c1-16)"
    if fresh pause "$digest"; then log "pause up to date"; return 0; fi
    command -v gcc >/dev/null || die "gcc is needed to build pause: apt-get install gcc libc6-dev"
    log "building pause $PAUSE_VERSION from $src (gcc -static)"
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$TOOLS_BIN/pause.tmp" "$src"
    strip "$TOOLS_BIN/pause.tmp"
    mv -f "$TOOLS_BIN/pause.tmp" "$TOOLS_BIN/pause"
    stamp pause "$digest"
    log "installed $TOOLS_BIN/pause"
}

(($#)) || set -- kubernetes helm kind
command -v "$GO" >/dev/null || die "no Go toolchain: install Go >= 1.21 (it fetches $GOTOOLCHAIN through the module proxy)"
for group in "$@"; do
    case "$group" in
        kubernetes|helm|kind|node) timed "tools $group" "build_$group" ;;
        *) die "unknown group '$group' (kubernetes, helm, kind, node)" ;;
    esac
done
