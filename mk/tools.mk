##@ Toolchain (Kubernetes binaries, helm, kind) and the local control plane

TOOLS_GROUPS ?= kubernetes helm kind
CONTROL_PLANE_DIR ?= $(PROJECT_DIR)/.state/controlplane

.PHONY: tools
tools: ## Build kube-apiserver, kubelet, kubeadm, kubectl, ... (Kubernetes v1.32.2), helm and kind into .tools/bin.
	$(PROJECT_DIR)/tools/build-tools.sh $(TOOLS_GROUPS)

.PHONY: node-binaries
node-binaries: tools ## Also build what the offline kind node image needs: coredns, local-path-provisioner, pause.
	$(PROJECT_DIR)/tools/build-tools.sh node

.PHONY: controlplane-up
controlplane-up: tools trixie-root ## Start etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 (kubeconfig in .state/controlplane).
	$(PYTHON) $(PROJECT_DIR)/tools/controlplane.py up $(CONTROL_PLANE_DIR)

.PHONY: controlplane-down
controlplane-down: ## Stop the local control plane started by controlplane-up.
	$(PYTHON) $(PROJECT_DIR)/tools/controlplane.py down $(CONTROL_PLANE_DIR)

.PHONY: test-controlplane
test-controlplane: venv tools trixie-root ## Run the control-plane test tier (real etcd + kube-apiserver on 127.0.0.1).
	$(VENV)/bin/pytest tests/controlplane
