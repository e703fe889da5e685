"""Prometheus gauges for a plan-following pool: sizes, use, plan generation, checkout wait,
database errors by kind. Pass a `PoolMetrics` as the engine's observer.

Under gunicorn with `PROMETHEUS_MULTIPROC_DIR` set, `exposition()` aggregates every worker of
the pod (gauges keep a `pid` label; call `mark_process_dead(pid)` from gunicorn's
`child_exit`); without it, metrics are per process.

Needs the ``metrics`` extra: ``pip install 'poolwarden[metrics]'``.
"""

from __future__ import annotations

import os

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        multiprocess,
    )
except ImportError as error:  # pragma: no cover (the packaging tier checks the message)
    raise ImportError(f"poolwarden.metrics needs the metrics extra: "
                      f"pip install 'poolwarden[metrics]' ({error})") from error

ERROR_KINDS = ("pool_timeout", "db_unavailable", "integrity", "other")
CONTENT_TYPE = CONTENT_TYPE_LATEST
CHECKOUT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class PoolMetrics:
    """One process's pool metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        self.retired_open = Gauge("poolwarden_pool_retired_open",
                                  "replaced pools not closed yet", **gauge)
        self.checkout_wait = Histogram(
            "poolwarden_pool_checkout_wait_seconds",
            "time a request waited for a pooled connection",
            buckets=CHECKOUT_BUCKETS, registry=self.registry,
        )
        self.errors = Counter("poolwarden_db_errors", "database errors by kind", ["kind"],
                              registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)

    def observe_pool(self, status: dict[str, object]) -> None:
        """`status` is the `/pool` dict (`poolwarden.poolstatus.pool_status`)."""
        self.pool_size.set(status["pool_size"])
        self.max_overflow.set(status["max_overflow"])
        self.checked_out.set(status["checked_out"])
        self.checked_in.set(status["checked_in"])
        self.overflow.set(status["overflow"])
        self.generation.set(status["generation"])
        self.retired_open.set(status.get("retired_pools_open", 0))

    def observe_checkout(self, seconds: float, *, timed_out: bool) -> None:
        self.checkout_wait.observe(seconds)
        if timed_out:
            self.errors.labels("pool_timeout").inc()

    def exposition(self) -> bytes:
        """The text exposition of this process, or of every worker in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def mark_process_dead(pid: int) -> None:
    """For gunicorn's `child_exit`: drop a dead worker's live gauges (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
