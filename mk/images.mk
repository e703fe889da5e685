##@ Project images (tag = project version; all FROM debian:trixie-slim)

# image name = Dockerfile (build context: the repository root). Images whose Dockerfile does
# not exist yet are skipped with a message.
PROJECT_IMAGES := poolwarden/app:$(VERSION)=app/Dockerfile \
                  poolwarden/flask-app:$(VERSION)=flask-app/Dockerfile \
                  poolwarden/pgbouncer:$(VERSION)=pgbouncer/Dockerfile \
                  poolwarden/operator:$(VERSION)=operator/Dockerfile \
                  poolwarden/postgres:17=postgres/Dockerfile \
                  poolwarden/pgbouncer-exporter:$(VERSION)=exporters/pgbouncer/Dockerfile \
                  poolwarden/postgres-exporter:$(VERSION)=exporters/postgres/Dockerfile

.PHONY: images
images: base-image ## Build the project's images (app, flask-app, pgbouncer, operator, postgres, both exporters).
	@set -e; for pair in $(PROJECT_IMAGES); do \
	  image=$${pair%%=*}; dockerfile=$${pair#*=}; \
	  if [ ! -f "$(PROJECT_DIR)/$$dockerfile" ]; then echo ">> images: skipping $$image ($$dockerfile not found)"; continue; fi; \
	  echo ">> images: building $$image from $$dockerfile"; \
	  DOCKER_BUILDKIT=0 docker build -q -f "$(PROJECT_DIR)/$$dockerfile" -t "$$image" "$(PROJECT_DIR)" >/dev/null; \
	done

.PHONY: load
load: images kind-up ## Load the project's images into the kind cluster KIND_CLUSTER.
	@set -e; images=""; for pair in $(PROJECT_IMAGES); do \
	  image=$${pair%%=*}; \
	  if docker image inspect "$$image" >/dev/null 2>&1; then images="$$images $$image"; \
	  else echo ">> load: skipping $$image (not built)"; fi; \
	done; \
	[ -n "$$images" ] || exit 0; \
	echo ">> load:$$images into kind cluster $(KIND_CLUSTER) (one archive: shared layers travel once)"; \
	start=$$(date +%s); \
	kind load docker-image --name "$(KIND_CLUSTER)" $$images; \
	echo ">> load: done in $$(( $$(date +%s) - start )) s"
