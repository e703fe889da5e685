# poolwarden: every pool between the app, PgBouncer and PostgreSQL inside the database's budget.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec
.DEFAULT_GOAL := help
PROJECT_DIR := $(shell dirname $(abspath $(lastword $(MAKEFILE_LIST))))

##@ Versions and locations (override on the command line)
VERSION        ?= 0.1.0
PYTHON         ?= python3
VENV           ?= $(PROJECT_DIR)/.venv
TOOLS_DIR      ?= $(PROJECT_DIR)/.tools
TOOLS_BIN      ?= $(TOOLS_DIR)/bin
KIND_CLUSTER   ?= poolwarden
TRIXIE_ROOT    ?= $(TOOLS_DIR)/trixie-root
# Debian trixie packages the host-side tests run from a chroot (the host is bookworm): the
# servers, and promtool plus both exporters for the monitoring tests.
TRIXIE_ROOT_PACKAGES := ca-certificates postgresql-17 postgresql-client-17 pgbouncer etcd-server etcd-client \
                        promtool prometheus-pgbouncer-exporter prometheus-postgres-exporter
export PATH := $(TOOLS_BIN):$(VENV)/bin:$(PATH)
# Every Python version the venv and the images share is written once, in constraints.txt;
# $(call pins,NAME...) gives NAME==VERSION for each (and stops when one has none).
CONSTRAINTS    := $(PROJECT_DIR)/constraints.txt
pins = $(foreach p,$(1),$(or $(shell awk -F'==' 'tolower($$1) == tolower("$(p)") {print; exit}' $(CONSTRAINTS)),$(error $(p) has no version in constraints.txt)))
# Wheels for the images' Python (3.13 of debian:trixie-slim), so image builds need no network:
# $(PIP_DOWNLOAD_IMAGE_WHEELS) --dest DIR PACKAGE==VERSION...
PIP_DOWNLOAD_IMAGE_WHEELS = $(VENV)/bin/pip download --quiet --only-binary=:all: -c $(CONSTRAINTS) \
  --python-version 3.13 --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any

##@ General
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development
.PHONY: venv
venv: $(VENV)/.installed ## Create .venv: the library with every extra, both reference apps and the operator (all editable), the dev tools.
$(VENV)/.installed: pyproject.toml app/pyproject.toml flask-app/pyproject.toml operator/pyproject.toml constraints.txt
	@echo ">> python venv in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(VENV)/bin/pip install --quiet -c $(CONSTRAINTS) \
	  -e '$(PROJECT_DIR)[async,sync,fastapi,flask,metrics,status]' -e $(PROJECT_DIR)/app -e $(PROJECT_DIR)/flask-app \
	  -e $(PROJECT_DIR)/operator --group '$(PROJECT_DIR)/pyproject.toml:dev'
	@touch $@

.PHONY: unit
unit: venv ## Run the unit tests (no servers).
	$(VENV)/bin/pytest tests/unit

.PHONY: lint
lint: venv ## Lint, and check that the core imports nothing it must not.
	$(VENV)/bin/ruff check src app flask-app operator tests bench tools
	cd $(PROJECT_DIR) && $(VENV)/bin/lint-imports

-include $(wildcard mk/*.mk)

.PHONY: trixie-root
trixie-root: ## Build the Debian trixie chroot: PostgreSQL 17, PgBouncer 1.24, etcd, promtool and both exporters for the host-side tests.
	$(PROJECT_DIR)/tools/trixie-rootfs.sh $(TRIXIE_ROOT) $(TRIXIE_ROOT_PACKAGES)

##@ Tests
.PHONY: test
test: venv dev-deps tools ## The README's test command: unit, packaging, integration (real PostgreSQL + PgBouncer) and control-plane tiers.
	$(VENV)/bin/pytest tests/unit tests/packaging tests/integration tests/controlplane

.PHONY: packaging
packaging: venv ## The wheel built from the tree, installed into a fresh venv: the CLI, every integration, no other top-level package.
	$(VENV)/bin/pytest tests/packaging
