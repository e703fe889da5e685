##@ Local stack (PostgreSQL 17 + PgBouncer 1.24 from a trixie root, the app from .venv)
DEV_STATE ?= $(PROJECT_DIR)/.state/dev
DEV_WORKERS ?= 3

.PHONY: dev-deps
dev-deps: trixie-root venv ## Everything the local stack and the integration tests need (trixie root, .venv).
	@command -v unshare >/dev/null || { echo "dev-deps: unshare (util-linux) is required" >&2; exit 1; }
	@echo ">> dev-deps: PostgreSQL 17 and PgBouncer 1.24 ready in $(TRIXIE_ROOT)"

.PHONY: dev
dev: dev-deps ## Start PostgreSQL, PgBouncer and the app (gunicorn) on 127.0.0.1 and print the URLs.
	DEV_WORKERS=$(DEV_WORKERS) $(VENV)/bin/python $(PROJECT_DIR)/tools/devstack/devstack.py up $(DEV_STATE)

.PHONY: dev-down
dev-down: ## Stop the local stack started by `make dev` (its data stays in .state/dev).
	@if [ -x $(VENV)/bin/python ]; then py=$(VENV)/bin/python; else py=$(PYTHON); fi; \
	$$py $(PROJECT_DIR)/tools/devstack/devstack.py down $(DEV_STATE)

.PHONY: integration
integration: dev-deps ## Run the integration tests (real PostgreSQL 17 + PgBouncer 1.24, the app under gunicorn).
	$(VENV)/bin/pytest tests/integration

##@ Data-path images (built by `make images`)
# Python packages baked into the app image (Python 3.13 of debian:trixie-slim), at the versions
# of constraints.txt, which the venv (and so the tests) installs too.
APP_WHEELS   ?= $(PROJECT_DIR)/.cache/wheels/app
APP_PIP_PINS := $(call pins,fastapi gunicorn uvicorn uvicorn-worker sqlalchemy greenlet asyncpg \
                  pydantic-settings prometheus-client watchfiles)

.PHONY: app-wheels
app-wheels: $(APP_WHEELS)/.complete ## Download the app image's wheels (Python 3.13, manylinux) into .cache/wheels/app.
$(APP_WHEELS)/.complete: mk/dev.mk constraints.txt | $(VENV)/.installed
	@echo ">> app-wheels: $(APP_PIP_PINS) -> $(APP_WHEELS)"
	@mkdir -p $(APP_WHEELS)
	$(PIP_DOWNLOAD_IMAGE_WHEELS) --dest $(APP_WHEELS) $(APP_PIP_PINS)
	@touch $@

images: app-wheels
