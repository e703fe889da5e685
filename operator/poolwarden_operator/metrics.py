"""The operator's Prometheus metrics: every series name, help text and label set, defined here.

``samples`` is pure (a budget's spec and the status the pass reported -> samples); ``Ledger``
keeps the latest samples of every budget (set after each pass, dropped when the budget is gone)
and is the collector a ``prometheus_client`` registry reads on every scrape, so a scrape never
calls the Kubernetes API. ``serve`` exposes it on ``POOLWARDEN_METRICS_PORT`` (see ``config``).

Rules, dashboards and tests take the names from ``SERIES``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

BUDGET_LABELS = ("namespace", "budget")
CONSUMER_LABELS = ("namespace", "budget", "consumer")
CONSUMER_STATE_LABELS = ("namespace", "budget", "consumer", "state")
SERVER_STATES = ("active", "idle")
"""Values of the ``state`` label of ``poolwarden_consumer_server_connections``."""

BUDGET_CONNECTIONS = "poolwarden_budget_connections"
BUDGET_SERVER_CONNECTIONS_PLANNED = "poolwarden_budget_server_connections_planned"
BUDGET_UTILIZATION = "poolwarden_budget_utilization"
BUDGET_OVERCOMMITTED = "poolwarden_budget_overcommitted"
BUDGET_PLAN_GENERATION = "poolwarden_budget_plan_generation"
BUDGET_READY = "poolwarden_budget_ready"
BUDGET_PLAN_APPLIED = "poolwarden_budget_plan_applied"
BUDGET_PODS_LAGGING = "poolwarden_budget_pods_lagging"
CONSUMER_SERVER_POOL = "poolwarden_consumer_server_pool"
CONSUMER_POOL_SIZE = "poolwarden_consumer_pool_size"
CONSUMER_MAX_OVERFLOW = "poolwarden_consumer_max_overflow"
BUDGET_PGBOUNCER_PODS_LAGGING = "poolwarden_budget_pgbouncer_pods_lagging"
CONSUMER_SERVER_CONNECTIONS = "poolwarden_consumer_server_connections"
CONSUMER_CLIENTS_WAITING = "poolwarden_consumer_clients_waiting"
CONSUMER_SERVER_CONNECTIONS_PEAK = "poolwarden_consumer_server_connections_peak"
CONSUMER_CLIENTS_WAITING_PEAK = "poolwarden_consumer_clients_waiting_peak"

SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    BUDGET_CONNECTIONS: (
        "The budget's server connections: spec.database.maxConnections minus reserved",
        BUDGET_LABELS,
    ),
    BUDGET_SERVER_CONNECTIONS_PLANNED: (
        "Server connections the plan gives out in steady state (status.serverTotal)",
        BUDGET_LABELS,
    ),
    BUDGET_UTILIZATION: (
        "The plan's utilization of the budget, 0..1 (status.utilization)",
        BUDGET_LABELS,
    ),
    BUDGET_OVERCOMMITTED: (
        "1 when the plan is overcommitted (server or client side), else 0",
        BUDGET_LABELS,
    ),
    BUDGET_PLAN_GENERATION: (
        "The plan generation last written (status.planGeneration)",
        BUDGET_LABELS,
    ),
    BUDGET_READY: ("1 when the budget's Ready condition is True, else 0", BUDGET_LABELS),
    BUDGET_PLAN_APPLIED: (
        "1 when every worker of every ready consumer pod runs its plan generation (Applied)",
        BUDGET_LABELS,
    ),
    BUDGET_PODS_LAGGING: (
        "Ready consumer pods not on their plan generation (status.applied.laggingPods)",
        BUDGET_LABELS,
    ),
    CONSUMER_SERVER_POOL: (
        "The consumer's PgBouncer alias pool_size per PgBouncer pod",
        CONSUMER_LABELS,
    ),
    CONSUMER_POOL_SIZE: ("The consumer's pool_size per worker", CONSUMER_LABELS),
    CONSUMER_MAX_OVERFLOW: ("The consumer's max_overflow per worker", CONSUMER_LABELS),
    BUDGET_PGBOUNCER_PODS_LAGGING: (
        "Ready PgBouncer pods whose effective config is not the sizing file "
        "(status.applied.pgbouncerLaggingPods)",
        BUDGET_LABELS,
    ),
    CONSUMER_SERVER_CONNECTIONS: (
        "Server connections of the consumer's alias over every ready PgBouncer pod (SHOW POOLS): "
        "state active (sv_active) or idle (sv_idle + sv_used + sv_tested + sv_login)",
        CONSUMER_STATE_LABELS,
    ),
    CONSUMER_CLIENTS_WAITING: (
        "Clients of the consumer waiting for a server connection in PgBouncer (cl_waiting)",
        CONSUMER_LABELS,
    ),
    CONSUMER_SERVER_CONNECTIONS_PEAK: (
        "The most server connections (active + idle) of the consumer in the ledger's window",
        CONSUMER_LABELS,
    ),
    CONSUMER_CLIENTS_WAITING_PEAK: (
        "The most clients of the consumer waiting at once in the ledger's window",
        CONSUMER_LABELS,
    ),
}
"""Series name -> (help, label names), in exposition order: gauges set from each pass, and the
in-use ones (``IN_USE``) from every sample of the ledger loop."""
IN_USE = (
    CONSUMER_SERVER_CONNECTIONS, CONSUMER_CLIENTS_WAITING, CONSUMER_SERVER_CONNECTIONS_PEAK,
    CONSUMER_CLIENTS_WAITING_PEAK,
)  # fmt: skip
"""Series set by every sample of PgBouncer's pools (``in_use_samples``), not by a pass."""

BUDGET_PASSES = "poolwarden_budget_passes"
"""A counter (exposed as ``poolwarden_budget_passes_total``): passes completed for the budget."""
BUDGET_PASSES_HELP = "Reconcile passes completed for the budget since the operator started"
EXPOSED = (*SERIES, f"{BUDGET_PASSES}_total")
"""Every sample name the endpoint serves (what alert rules and dashboards may use)."""

PLANNED_ONLY = (
    BUDGET_SERVER_CONNECTIONS_PLANNED, BUDGET_UTILIZATION, BUDGET_OVERCOMMITTED,
    BUDGET_PLAN_APPLIED, BUDGET_PODS_LAGGING, CONSUMER_SERVER_POOL, CONSUMER_POOL_SIZE,
    CONSUMER_MAX_OVERFLOW, BUDGET_PGBOUNCER_PODS_LAGGING, *IN_USE,
)  # fmt: skip
"""Series a budget that cannot be planned (state Invalid) does not have: there is no plan."""


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[str, ...]
    """Label values, in the order of ``SERIES[name][1]``."""
    value: float


def samples(
    namespace: str, name: str, spec: dict[str, Any], status: dict[str, Any]
) -> list[Sample]:
    """The series of one budget, from its spec and the status its last pass reported.

    ``status`` is the budget's whole status after the pass. A budget that cannot be planned
    (``state: Invalid``) has its budget, generation and readiness, none of the plan's series.
    """
    budget = (namespace, name)
    database = spec.get("database") or {}
    ready = _condition(status, "Ready") == "True"
    found = [
        Sample(BUDGET_CONNECTIONS, budget, _number(database.get("maxConnections"))
               - _number(database.get("reserved"))),
        Sample(BUDGET_READY, budget, 1.0 if ready else 0.0),
    ]  # fmt: skip
    if status.get("planGeneration") is not None:
        found.append(Sample(BUDGET_PLAN_GENERATION, budget, _number(status["planGeneration"])))
    if status.get("state") in (None, "Invalid"):
        return found
    over = status.get("state") == "Overcommitted" or _condition(status, "Overcommitted") == "True"
    found += [
        Sample(BUDGET_SERVER_CONNECTIONS_PLANNED, budget, _number(status.get("serverTotal"))),
        Sample(BUDGET_UTILIZATION, budget, _number(status.get("utilization"))),
        Sample(BUDGET_OVERCOMMITTED, budget, 1.0 if over else 0.0),
    ]
    if _condition(status, "Applied") is not None:
        behind = _number((status.get("applied") or {}).get("laggingPods"))
        found += [
            Sample(BUDGET_PLAN_APPLIED, budget, 0.0 if lagging(status) else 1.0),
            Sample(BUDGET_PODS_LAGGING, budget, behind),
        ]
        summary = status.get("applied") or {}
        if summary.get("pgbouncerPods") is not None:
            found.append(Sample(BUDGET_PGBOUNCER_PODS_LAGGING, budget,
                                _number(summary.get("pgbouncerLaggingPods"))))  # fmt: skip
    for consumer in status.get("consumers") or []:
        labels = (*budget, str(consumer.get("name")))
        found += [
            Sample(CONSUMER_SERVER_POOL, labels, _number(consumer.get("serverPool"))),
            Sample(CONSUMER_POOL_SIZE, labels, _number(consumer.get("poolSize"))),
            Sample(CONSUMER_MAX_OVERFLOW, labels, _number(consumer.get("maxOverflow"))),
        ]
    return found


def in_use_samples(
    namespace: str, name: str, now: dict[str, Any], peaks: dict[str, tuple[int, int]]
) -> list[Sample]:
    """The in-use series of one budget from one sample: ``now`` is consumer ->
    ``inuse.Counts``, ``peaks`` consumer -> (peak server connections, peak clients waiting)."""
    found = []
    for consumer in sorted(now):
        c = now[consumer]
        labels = (namespace, name, consumer)
        server, waiting = peaks.get(consumer, (0, 0))
        found += [
            Sample(CONSUMER_SERVER_CONNECTIONS, (*labels, "active"), float(c.server_active)),
            Sample(CONSUMER_SERVER_CONNECTIONS, (*labels, "idle"), float(c.server_idle)),
            Sample(CONSUMER_CLIENTS_WAITING, labels, float(c.clients_waiting)),
            Sample(CONSUMER_SERVER_CONNECTIONS_PEAK, labels, float(max(server, c.server))),
            Sample(CONSUMER_CLIENTS_WAITING_PEAK, labels,
                   float(max(waiting, c.clients_waiting))),
        ]  # fmt: skip
    return found


class Ledger(Collector):
    """The latest samples of every budget and its count of passes; a ``prometheus_client``
    collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # passes run on the event loop, scrapes in a thread
        self._budgets: dict[tuple[str, str], list[Sample]] = {}
        self._passes: dict[tuple[str, str], int] = {}
        self._in_use: dict[tuple[str, str], list[Sample]] = {}

    def set_in_use(self, key: tuple[str, str], found: list[Sample]) -> None:
        """A budget's in-use samples from the latest sample of its PgBouncer pods (no pass);
        kept only while the budget is (``set`` with None drops them)."""
        with self._lock:
            if key in self._budgets:
                self._in_use[key] = list(found)

    def set(self, key: tuple[str, str], found: list[Sample] | None) -> None:
        """A budget's samples after a completed pass; None when the budget is gone."""
        with self._lock:
            if found is None:
                self._budgets.pop(key, None)
                self._passes.pop(key, None)
                self._in_use.pop(key, None)
            else:
                self._budgets[key] = list(found)
                self._passes[key] = self._passes.get(key, 0) + 1

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self._lock:
            every = [s for key in sorted(self._budgets) for s in self._budgets[key]]
            every += [s for key in sorted(self._in_use) for s in self._in_use[key]]
            passes = sorted(self._passes.items())
        counter = CounterMetricFamily(BUDGET_PASSES, BUDGET_PASSES_HELP, labels=BUDGET_LABELS)
        for key, count in passes:
            counter.add_metric(list(key), count)
        yield counter
        for series, (text, labels) in SERIES.items():
            family = GaugeMetricFamily(series, text, labels=list(labels))
            for sample in every:
                if sample.name == series:
                    family.add_metric(list(sample.labels), sample.value)
            yield family


def registry(ledger: Ledger) -> CollectorRegistry:
    """A registry of the ledger alone (no process or platform series)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(ledger)
    return found


def serve(ledger: Ledger, host: str, port: int) -> Any:
    """Serve ``/metrics`` in a daemon thread; returns the server (``.shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=host, registry=registry(ledger))
    return server


def lagging(status: dict[str, Any]) -> bool:
    """The budget's Applied condition is False: some ready pod is not on its plan yet."""
    return _condition(status, "Applied") == "False"


def _condition(status: dict[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _number(value: Any) -> float:
    """A status or spec number (utilization is a string like ``"0.91"``); 0 when absent."""
    if isinstance(value, bool) or value is None:
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
