"""Prometheus metrics of one worker: pool gauges, checkout wait, database errors by kind.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set by gunicorn.conf.py and /metrics aggregates
all workers of the pod (gauges keep a `pid` label); without it, metrics are per process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

ERROR_KINDS = ("pool_timeout", "db_unavailable", "integrity", "other")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        gauge = {"registry": self.registry, "multiprocess_mode": "liveall"}
        self.pool_size = Gauge("poolwarden_pool_size", "pool_size of this worker's pool", **gauge)
        self.max_overflow = Gauge("poolwarden_pool_max_overflow", "max_overflow of the pool",
                                  **gauge)
        self.checked_out = Gauge("poolwarden_pool_checked_out",
                                 "connections in use by requests", **gauge)
        self.checked_in = Gauge("poolwarden_pool_checked_in", "idle pooled connections",
                                **gauge)
        self.overflow = Gauge("poolwarden_pool_overflow", "connections above pool_size", **gauge)
        self.generation = Gauge("poolwarden_plan_generation", "plan generation in use", **gauge)
        self.checkout_wait = Histogram(
            "poolwarden_pool_checkout_wait_seconds",
            "time a request waited for a pooled connection",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.errors = Counter("poolwarden_db_errors", "database errors by kind", ["kind"],
                              registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)

    def observe_pool(self, status: dict[str, object]) -> None:
        self.pool_size.set(status["pool_size"])
        self.max_overflow.set(status["max_overflow"])
        self.checked_out.set(status["checked_out"])
        self.checked_in.set(status["checked_in"])
        self.overflow.set(status["overflow"])
        self.generation.set(status["generation"])

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
