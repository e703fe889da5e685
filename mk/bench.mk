##@ Benchmark
BENCH_ARGS ?=
UTILIZATION_ARGS ?=

.PHONY: bench
bench: dev-deps ## Side by side: app->PgBouncer->PG, app->PG (pool), app->PG (NullPool); table + plot in bench/out/.
	$(VENV)/bin/python $(PROJECT_DIR)/bench/run.py $(BENCH_ARGS)

.PHONY: bench-utilization
bench-utilization: dev-deps ## Old planner vs new, side by side: achieved concurrency / budget for load spread, on one pod, two consumers 3:1; table + plot in bench/out/.
	$(VENV)/bin/python $(PROJECT_DIR)/bench/utilization.py $(UTILIZATION_ARGS)
