"""Prometheus metrics of one worker: pool gauges and database errors by kind.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set by gunicorn.conf.py and /metrics aggregates
all workers of the pod (gauges keep a `pid` label); without it, metrics are per process.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

ERROR_KINDS = ("pool_timeout", "db_unavailable", "integrity", "other")
GAUGES = {
    "pool_size": ("poolwarden_pool_size", "pool_size of this worker's pool"),
    "max_overflow": ("poolwarden_pool_max_overflow", "max_overflow of the pool"),
    "checked_out": ("poolwarden_pool_checked_out", "connections in use by requests"),
    "checked_in": ("poolwarden_pool_checked_in", "idle pooled connections"),
    "overflow": ("poolwarden_pool_overflow", "connections above pool_size"),
    "generation": ("poolwarden_plan_generation", "plan generation in use"),
    "retired_pools_open": ("poolwarden_retired_pools_open",
                           "replaced pools with connections still open"),
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gauges = {key: Gauge(name, doc, registry=self.registry,
                                  multiprocess_mode="liveall")
                       for key, (name, doc) in GAUGES.items()}
        self.errors = Counter("poolwarden_db_errors", "database errors by kind", ["kind"],
                              registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)

    def observe_pool(self, status: dict[str, object]) -> None:
        for key, gauge in self.gauges.items():
            gauge.set(float(status[key]))  # type: ignore[arg-type]

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
