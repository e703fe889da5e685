##@ The Flask reference service's image wheels (built by `make images`)
# Python packages baked into the Flask image (Python 3.13 of debian:trixie-slim), at the
# versions of constraints.txt, which the venv (and so the tests) installs too.
FLASK_APP_WHEELS   ?= $(PROJECT_DIR)/.cache/wheels/flask-app
FLASK_APP_PIP_PINS := $(call pins,flask gunicorn sqlalchemy psycopg psycopg-binary pydantic-settings \
                        prometheus-client watchfiles)

.PHONY: flask-app-wheels
flask-app-wheels: $(FLASK_APP_WHEELS)/.complete ## Download the Flask image's wheels (Python 3.13, manylinux) into .cache/wheels/flask-app.
$(FLASK_APP_WHEELS)/.complete: mk/flask-app.mk constraints.txt | $(VENV)/.installed
	@echo ">> flask-app-wheels: $(FLASK_APP_PIP_PINS) -> $(FLASK_APP_WHEELS)"
	@mkdir -p $(FLASK_APP_WHEELS)
	$(PIP_DOWNLOAD_IMAGE_WHEELS) --dest $(FLASK_APP_WHEELS) $(FLASK_APP_PIP_PINS)
	@touch $@

images: flask-app-wheels
