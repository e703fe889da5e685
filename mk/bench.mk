##@ Benchmark
BENCH_ARGS ?=

.PHONY: bench
bench: dev-deps ## Side by side: app->PgBouncer->PG, app->PG (pool), app->PG (NullPool); table + plot in bench/out/.
	$(VENV)/bin/python $(PROJECT_DIR)/bench/run.py $(BENCH_ARGS)
