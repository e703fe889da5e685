##@ Helm chart (charts/poolwarden)
CHART_DIR ?= $(PROJECT_DIR)/charts/poolwarden

.PHONY: chart-lint
chart-lint: tools ## helm lint --strict the chart with its defaults and every ci/*-values.yaml.
	@echo ">> helm lint --strict $(CHART_DIR) (defaults)"
	$(TOOLS_BIN)/helm lint --strict $(CHART_DIR)
	@for f in $(CHART_DIR)/ci/*-values.yaml; do \
	  echo ">> helm lint --strict $(CHART_DIR) -f $$f"; \
	  $(TOOLS_BIN)/helm lint --strict $(CHART_DIR) -f $$f || exit 1; \
	done

.PHONY: chart-test
chart-test: venv tools trixie-root ## Chart tests: render tests (helm) and install/upgrade into a real control plane.
	$(VENV)/bin/pytest tests/unit/test_chart_render.py tests/controlplane/test_chart_install.py
