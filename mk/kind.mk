##@ Containers and kind (Docker engine, local base image, offline node image, cluster)

# Empty = kind's default node image when a registry answers, the local offline image when not.
KIND_NODE_IMAGE ?=
KIND_CONFIG     ?= $(PROJECT_DIR)/kind-config.yaml
KIND_KUBECONFIG ?= $(PROJECT_DIR)/.state/kind/$(KIND_CLUSTER).kubeconfig
export KIND_CLUSTER KIND_NODE_IMAGE KIND_CONFIG KIND_KUBECONFIG

.PHONY: docker-up
docker-up: ## Make sure a Docker engine answers (installs Debian's docker.io + a runc wrapper on a bare host).
	$(PROJECT_DIR)/tools/docker-up.sh

.PHONY: base-image
base-image: docker-up ## Make sure debian:trixie-slim exists (pull, or debootstrap + docker import when offline).
	$(PROJECT_DIR)/tools/base-image.sh

.PHONY: component-images
component-images: base-image node-binaries ## Build pause, etcd, CoreDNS, control-plane, kube-proxy, CNI and storage images for the node image.
	$(PROJECT_DIR)/tools/images/build.sh

.PHONY: kind-node-image
kind-node-image: base-image node-binaries ## Build the offline kind node image poolwarden/kind-node:<kubernetes version>.
	$(PROJECT_DIR)/tools/node-image/build.sh

.PHONY: kind-up
kind-up: docker-up tools ## Create the kind cluster KIND_CLUSTER unless it exists (offline node image when no registry answers).
	$(PROJECT_DIR)/tools/kind-cluster.sh up

.PHONY: kind-down
kind-down: ## Delete the kind cluster KIND_CLUSTER.
	$(PROJECT_DIR)/tools/kind-cluster.sh down

.PHONY: kind-smoke
kind-smoke: venv kind-up ## Smoke-test the kind cluster: Service DNS across nodes, a locally built image, a PVC that outlives its pod.
	POOLWARDEN_E2E_KUBECONFIG=$(KIND_KUBECONFIG) POOLWARDEN_E2E_KIND_CLUSTER=$(KIND_CLUSTER) \
	  $(VENV)/bin/pytest -m e2e tests/e2e/test_kind_smoke.py
