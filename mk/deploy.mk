##@ Deploy and end to end on kind (docs/e2e.md)

DEPLOY_RELEASE   ?= poolwarden
DEPLOY_NAMESPACE ?= poolwarden
# Locally built images only (`make images load`): the postgres stand-in, never pulled.
DEPLOY_VALUES    ?= $(PROJECT_DIR)/charts/poolwarden/ci/offline-values.yaml
# The app on NodePort 30080 (kind-config.yaml maps it to 127.0.0.1:30080), PostgreSQL on a
# small claim of kind's default StorageClass, small requests for a 2-core machine.
DEPLOY_SET       ?= --set app.service.type=NodePort --set app.service.nodePort=30080 \
                    --set postgresql.persistence.enabled=true --set postgresql.persistence.size=1Gi \
                    --set app.resources.requests.cpu=50m --set app.resources.requests.memory=128Mi \
                    --set postgresql.resources.requests.cpu=50m
DEPLOY_ARGS      ?=
DEPLOY_TIMEOUT   ?= 10m
E2E_ARGS         ?=
KEEP_CLUSTER     ?=
E2E_KUBECONFIG   ?= $(KIND_KUBECONFIG)
# The chart's base name of objects (charts/poolwarden/templates/_helpers.tpl, poolwarden.fullname).
DEPLOY_FULLNAME  := $(if $(findstring poolwarden,$(DEPLOY_RELEASE)),$(DEPLOY_RELEASE),$(DEPLOY_RELEASE)-poolwarden)
export DEPLOY_RELEASE DEPLOY_NAMESPACE

.PHONY: deploy
deploy: tools ## helm upgrade --install --wait the chart into the kind cluster (DEPLOY_RELEASE in DEPLOY_NAMESPACE).
	@test -f "$(KIND_KUBECONFIG)" || { echo "deploy: no kubeconfig at $(KIND_KUBECONFIG); run 'make kind-up load' first" >&2; exit 1; }
	@echo ">> deploy: helm upgrade --install $(DEPLOY_RELEASE) charts/poolwarden -n $(DEPLOY_NAMESPACE) --wait (values: $(notdir $(DEPLOY_VALUES)), app on NodePort 30080)"
	@# Helm installs crds/ once and never upgrades it: a cluster kept from an older checkout
	@# would serve an old schema that prunes the status this operator writes.
	@$(TOOLS_BIN)/kubectl --kubeconfig "$(KIND_KUBECONFIG)" apply --server-side --force-conflicts \
	  -f $(PROJECT_DIR)/charts/poolwarden/crds/ >/dev/null
	@echo ">> deploy: CRD applied from charts/poolwarden/crds/ (helm never upgrades crds/)"
	@start=$$(date +%s); \
	$(TOOLS_BIN)/helm --kubeconfig "$(KIND_KUBECONFIG)" upgrade --install $(DEPLOY_RELEASE) \
	  $(PROJECT_DIR)/charts/poolwarden -n $(DEPLOY_NAMESPACE) --create-namespace \
	  $(foreach f,$(DEPLOY_VALUES),-f $(f)) $(DEPLOY_SET) $(DEPLOY_ARGS) \
	  --wait --timeout $(DEPLOY_TIMEOUT) >/dev/null; \
	echo ">> deploy: release $(DEPLOY_RELEASE) ready in $$(( $$(date +%s) - start )) s"
	@$(TOOLS_BIN)/kubectl --kubeconfig "$(KIND_KUBECONFIG)" -n $(DEPLOY_NAMESPACE) get deploy,statefulset,connectionbudgets

.PHONY: up
up: kind-up load deploy ## The whole system on kind: cluster + images + helm install; prints how to reach the app.
	@echo ">> up: poolwarden is running in kind cluster $(KIND_CLUSTER), namespace $(DEPLOY_NAMESPACE)"
	@echo "   app:        curl http://127.0.0.1:30080/healthz"
	@echo "               curl -X POST -H 'content-type: application/json' -d '{\"name\":\"hello\"}' http://127.0.0.1:30080/items"
	@echo "               curl http://127.0.0.1:30080/pool"
	@echo "   kubectl:    export KUBECONFIG=$(KIND_KUBECONFIG) PATH=$(TOOLS_BIN):\$$PATH"
	@echo "   budget:     kubectl -n $(DEPLOY_NAMESPACE) get connectionbudgets -o wide"
	@echo "   scale:      kubectl -n $(DEPLOY_NAMESPACE) scale deployment $(DEPLOY_FULLNAME)-app --replicas 4"
	@echo "   helm test:  helm -n $(DEPLOY_NAMESPACE) test $(DEPLOY_RELEASE)"
	@echo "   remove:     make e2e-down   (deletes the cluster)"

.PHONY: e2e
e2e: venv tools ## Cluster if missing, images, load, deploy, run tests/e2e; deletes the cluster afterwards unless KEEP_CLUSTER=1.
	@start=$$(date +%s); rc=0; \
	echo ">> e2e: phase 1/4 cluster $(KIND_CLUSTER) (created only if missing)"; \
	$(MAKE) --no-print-directory kind-up || rc=$$?; \
	if [ $$rc -eq 0 ]; then echo ">> e2e: phase 2/4 images and kind load"; $(MAKE) --no-print-directory load || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then echo ">> e2e: phase 3/4 deploy"; $(MAKE) --no-print-directory deploy || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then \
	  echo ">> e2e: phase 4/4 pytest -m e2e tests/e2e (kubeconfig $(E2E_KUBECONFIG))"; \
	  POOLWARDEN_E2E_KUBECONFIG="$(E2E_KUBECONFIG)" POOLWARDEN_E2E_KIND_CLUSTER="$(KIND_CLUSTER)" \
	  POOLWARDEN_E2E_DEPLOY_RELEASE="$(DEPLOY_RELEASE)" POOLWARDEN_E2E_DEPLOY_NAMESPACE="$(DEPLOY_NAMESPACE)" \
	    $(VENV)/bin/pytest -m e2e -rP tests/e2e $(E2E_ARGS) || rc=$$?; \
	fi; \
	if [ "$(KEEP_CLUSTER)" = 1 ]; then \
	  echo ">> e2e: keeping cluster $(KIND_CLUSTER) (KEEP_CLUSTER=1); 'make e2e-down' deletes it"; \
	else \
	  echo ">> e2e: deleting cluster $(KIND_CLUSTER) (KEEP_CLUSTER=1 keeps it)"; $(MAKE) --no-print-directory kind-down || true; \
	fi; \
	echo ">> e2e: $$( [ $$rc -eq 0 ] && echo passed || echo FAILED ) in $$(( $$(date +%s) - start )) s wall time"; \
	exit $$rc

.PHONY: e2e-down
e2e-down: ## Delete the e2e cluster (after `make e2e KEEP_CLUSTER=1` or `make up`).
	@echo ">> e2e-down: deleting kind cluster $(KIND_CLUSTER)"
	@$(MAKE) --no-print-directory kind-down
