##@ The Flask reference service's image wheels (built by `make images`)
# Python packages baked into the Flask image (Python 3.13 of debian:trixie-slim), pinned to
# the versions the tests run with.
FLASK_APP_WHEELS   ?= $(PROJECT_DIR)/.cache/wheels/flask-app
FLASK_APP_PIP_PINS := flask==3.1.3 gunicorn==27.0.1 sqlalchemy==2.1.9 psycopg[binary]==3.3.9 \
                      pydantic-settings==2.16.3 prometheus-client==0.26.0 watchfiles==1.3.0

.PHONY: flask-app-wheels
flask-app-wheels: $(FLASK_APP_WHEELS)/.complete ## Download the Flask image's wheels (Python 3.13, manylinux) into .cache/wheels/flask-app.
$(FLASK_APP_WHEELS)/.complete: mk/flask-app.mk | $(VENV)/.installed
	@echo ">> flask-app-wheels: $(FLASK_APP_PIP_PINS) -> $(FLASK_APP_WHEELS)"
	@mkdir -p $(FLASK_APP_WHEELS)
	$(PIP_DOWNLOAD_IMAGE_WHEELS) --dest $(FLASK_APP_WHEELS) $(FLASK_APP_PIP_PINS)
	@touch $@

images: flask-app-wheels
