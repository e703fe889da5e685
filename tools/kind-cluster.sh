#!/usr/bin/env bash
# Create or delete the project's kind cluster.
#
#   tools/kind-cluster.sh up     create cluster $KIND_CLUSTER from kind-config.yaml unless it exists
#   tools/kind-cluster.sh down   delete it
#
# Node image: $KIND_NODE_IMAGE when set; otherwise kind's own default (kindest/node) when a
# container registry answers, and the locally built offline image poolwarden/kind-node:<version>
# (tools/node-image/build.sh) when none does. The kubeconfig goes to $KIND_KUBECONFIG
# (default .state/kind/<cluster>.kubeconfig); the user's ~/.kube/config is never touched.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
TOOLS_BIN=${TOOLS_BIN:-$root/.tools/bin}
export PATH="$TOOLS_BIN:$PATH"
KIND_CLUSTER=${KIND_CLUSTER:-poolwarden}
KIND_CONFIG=${KIND_CONFIG:-$root/kind-config.yaml}
KIND_KUBECONFIG=${KIND_KUBECONFIG:-$root/.state/kind/$KIND_CLUSTER.kubeconfig}
KIND_WAIT=${KIND_WAIT:-300s}

log() { echo ">> kind: $*"; }
die() { echo "kind: $*" >&2; exit 1; }

command -v kind >/dev/null || die "kind not found; run 'make tools'"

exists() {
  local clusters
  clusters=$(kind get clusters 2>/dev/null)
  grep -qx "$KIND_CLUSTER" <<<"$clusters"
}

registry_answers() {
  # Any HTTP answer from Docker Hub's registry endpoint (401 included) means images can be pulled.
  local code
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null || true)
  [ -n "$code" ] && [ "$code" != 000 ]
}

build_node_image() {
  "$here/build-tools.sh" node   # coredns, local-path-provisioner, pause (no-op when built)
  "$here/node-image/build.sh"
}

case "${1:-}" in
  up)
    if exists; then
      mkdir -p "$(dirname "$KIND_KUBECONFIG")"
      kind get kubeconfig --name "$KIND_CLUSTER" >"$KIND_KUBECONFIG"
      if kubectl --kubeconfig "$KIND_KUBECONFIG" --request-timeout=20s get --raw /readyz >/dev/null 2>&1; then
        log "cluster $KIND_CLUSTER exists and answers; kubeconfig in $KIND_KUBECONFIG"
        exit 0
      fi
      # Node containers stopped with their Docker engine (a machine restart) come back with
      # new addresses that nothing fixes up: a cluster that does not answer is recreated.
      log "cluster $KIND_CLUSTER exists but its API server does not answer: recreating it"
      kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
    fi
    image_args=()
    if [ -n "${KIND_NODE_IMAGE:-}" ]; then
      log "node image $KIND_NODE_IMAGE (KIND_NODE_IMAGE)"
      image_args=(--image "$KIND_NODE_IMAGE")
      if [[ "$KIND_NODE_IMAGE" == poolwarden/kind-node:* ]] && ! docker image inspect "$KIND_NODE_IMAGE" >/dev/null 2>&1; then
        build_node_image
      fi
    elif registry_answers; then
      log "online: a container registry answers, using kind's default node image"
    else
      build_node_image
      image="poolwarden/kind-node:$("$TOOLS_BIN/kubeadm" version -o short)"
      log "offline: no container registry answers, using the local node image $image"
      image_args=(--image "$image")
    fi
    mkdir -p "$(dirname "$KIND_KUBECONFIG")"
    log "creating cluster $KIND_CLUSTER from $(basename "$KIND_CONFIG") (kubeconfig: $KIND_KUBECONFIG)"
    start=$SECONDS
    kind create cluster --name "$KIND_CLUSTER" --config "$KIND_CONFIG" "${image_args[@]}" \
      --kubeconfig "$KIND_KUBECONFIG" --wait "$KIND_WAIT"
    # kind waits for the control plane only; the cluster is up when every node is Ready and
    # cluster DNS answers.
    log "waiting for every node to be Ready and for CoreDNS"
    kubectl --kubeconfig "$KIND_KUBECONFIG" wait --for=condition=Ready nodes --all --timeout=240s
    kubectl --kubeconfig "$KIND_KUBECONFIG" -n kube-system rollout status deployment/coredns --timeout=240s
    log "cluster $KIND_CLUSTER ready in $((SECONDS - start)) s"
    kubectl --kubeconfig "$KIND_KUBECONFIG" get nodes -o wide
    ;;
  down)
    if exists; then
      log "deleting cluster $KIND_CLUSTER"
      kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG"
    else
      log "no cluster $KIND_CLUSTER"
    fi
    rm -f "$KIND_KUBECONFIG"
    ;;
  *) die "usage: tools/kind-cluster.sh up|down" ;;
esac
