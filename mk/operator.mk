##@ Operator (kopf): image wheelhouse, local run, tests

# Python packages baked into the operator image (Python 3.13 of debian:trixie-slim), at the
# versions of constraints.txt.
OPERATOR_WHEELS      ?= $(PROJECT_DIR)/.cache/wheels/operator
OPERATOR_PIP_PINS    := $(call pins,kopf aiohttp kubernetes pyyaml prometheus-client pip)
OPERATOR_NAMESPACE   ?= default

.PHONY: operator-wheels
operator-wheels: $(OPERATOR_WHEELS)/.complete ## Download the operator image's wheels (Python 3.13, manylinux) into .cache/wheels/operator.
$(OPERATOR_WHEELS)/.complete: mk/operator.mk constraints.txt | $(VENV)/.installed
	@echo ">> operator-wheels: $(OPERATOR_PIP_PINS) -> $(OPERATOR_WHEELS)"
	@mkdir -p $(OPERATOR_WHEELS)
	$(PIP_DOWNLOAD_IMAGE_WHEELS) --dest $(OPERATOR_WHEELS) $(OPERATOR_PIP_PINS)
	@touch $@

# The project images are built from the repository root; the operator's needs its wheelhouse.
images: operator-wheels

.PHONY: operator-run
operator-run: venv ## Run the operator on the host against $$KUBECONFIG, watching OPERATOR_NAMESPACE.
	POOLWARDEN_NAMESPACE=$(OPERATOR_NAMESPACE) $(VENV)/bin/python -m poolwarden_operator

.PHONY: test-operator
test-operator: venv tools trixie-root ## Run the operator's unit and control-plane tests.
	$(VENV)/bin/pytest tests/unit/test_planner.py tests/unit/test_cli.py tests/unit/test_operator_desired.py \
	  tests/unit/test_operator_coalesce.py tests/unit/test_operator_metrics.py \
	  tests/unit/test_operator_applied.py tests/controlplane/test_operator.py \
	  tests/controlplane/test_operator_metrics_on_apiserver.py \
	  tests/controlplane/test_operator_propagation_on_apiserver.py
