"""The connection-budget planner: pure arithmetic, no I/O.

Given a database budget, the PgBouncer replicas and the consumers (Deployments running gunicorn
workers with one SQLAlchemy pool each), compute every limit in the chain:

* per PgBouncer pod: ``max_db_connections = budget // pods`` where ``pods`` counts every pod that
  may hold server connections (``max(live, replicas + surge) + terminating``: the Deployment
  controller does not count terminating pods against maxSurge), so that
  ``pods x max_db_connections <= budget`` holds in every state the operator can see; a terminating
  pod keeps lowering the others' limits until it is gone (lower before raise);
  ``reserve_pool_size`` is a tenth of it and ``default_pool_size`` the rest;
* per consumer worker: a *share* of concurrent transactions (``pool_size + max_overflow``)
  so that every worker of every pod, surge pods included, fits the server connections the
  PgBouncer replicas hold in steady state. Shares follow the consumers' weights: the planner
  raises the share of the consumer whose next step is cheapest in weight terms, one step at a
  time, and stops at the first step that no longer fits, so shares stay within one connection
  of exact proportion and more replicas never raise a pod's share;
* when the capacity cannot give every worker one connection the plan is *overcommitted*:
  every worker gets 1 and PgBouncer queues the rest.

Bad input raises :class:`PlannerError`, whose ``field`` names what to change.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any

OVERFLOW_POLICIES = ("none", "quarter", "half")
"""How a worker's share splits into SQLAlchemy ``pool_size`` and ``max_overflow``:
``none`` keeps it all pooled, ``quarter``/``half`` hand that part of it to ``max_overflow``."""

DEFAULT_MAX_CLIENT_CONN = 1000


class PlannerError(ValueError):
    """Input the planner cannot plan for; ``field`` names the input to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclasses.dataclass(frozen=True)
class Budget:
    """The database side: ``max_connections`` minus what is ``reserved`` for admins and others."""

    max_connections: int
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved


@dataclasses.dataclass(frozen=True)
class PgBouncer:
    """The PgBouncer Deployment: replicas, rollout surge, the wanted ``max_client_conn``, and the
    pods that exist now (``live`` not terminating, ``terminating`` with a deletion timestamp)."""

    replicas: int
    surge: int = 0
    max_client_conn: int = DEFAULT_MAX_CLIENT_CONN
    live: int = 0
    terminating: int = 0
    held: tuple[int, ...] = ()
    """The ``max_db_connections`` that terminating pods may still hold (one per pod known; a
    pod that terminated before it read a lower limit keeps the higher one until it is gone)."""

    @property
    def pods(self) -> int:
        """Pods that may hold server connections: ``max(live, replicas + surge) + terminating``."""
        return pods_that_may_hold(self.replicas, self.surge, self.live, self.terminating)


@dataclasses.dataclass(frozen=True)
class Consumer:
    """One Deployment whose pods run ``workers`` gunicorn workers, each with one pool."""

    name: str
    replicas: int
    workers: int = 1
    weight: int = 1
    surge: int = 0
    overflow: str = "none"

    @property
    def peak_pods(self) -> int:
        return self.replicas + self.surge

    @property
    def peak_workers(self) -> int:
        return self.peak_pods * self.workers


@dataclasses.dataclass(frozen=True)
class ConsumerPlan:
    name: str
    replicas: int
    surge: int
    workers: int
    weight: int
    overflow: str
    pool_size: int
    max_overflow: int

    @property
    def share(self) -> int:
        """Concurrent transactions one worker may hold: ``pool_size + max_overflow``."""
        return self.pool_size + self.max_overflow

    @property
    def per_pod(self) -> int:
        """Connections one pod may open to PgBouncer."""
        return self.workers * self.share

    @property
    def peak_total(self) -> int:
        """Connections all pods, surge included, may open."""
        return (self.replicas + self.surge) * self.per_pod


@dataclasses.dataclass(frozen=True)
class PgBouncerPlan:
    replicas: int
    surge: int
    default_pool_size: int
    max_db_connections: int
    reserve_pool_size: int
    max_client_conn: int


@dataclasses.dataclass(frozen=True)
class Plan:
    max_connections: int
    reserved: int
    budget: int
    capacity: int
    """Server connections the PgBouncer replicas hold in steady state (<= budget)."""
    server_total: int
    """Server connections all PgBouncer pods that may hold them may open (<= budget)."""
    pgbouncer_pods: int
    """PgBouncer pods that may hold server connections (surge and terminating included)."""
    client_total: int
    """Concurrent transactions all workers, surge pods included, may ask for."""
    overcommitted: bool
    pgbouncer: PgBouncerPlan
    consumers: tuple[ConsumerPlan, ...]
    explanation: str

    def consumer(self, name: str) -> ConsumerPlan:
        for item in self.consumers:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (the CLI's JSON output)."""
        return {
            "max_connections": self.max_connections,
            "reserved": self.reserved,
            "budget": self.budget,
            "capacity": self.capacity,
            "server_total": self.server_total,
            "pgbouncer_pods": self.pgbouncer_pods,
            "client_total": self.client_total,
            "overcommitted": self.overcommitted,
            "pgbouncer": dataclasses.asdict(self.pgbouncer),
            "consumers": [
                {
                    "name": c.name,
                    "replicas": c.replicas,
                    "surge": c.surge,
                    "workers": c.workers,
                    "weight": c.weight,
                    "overflow": c.overflow,
                    "pool_size": c.pool_size,
                    "max_overflow": c.max_overflow,
                    "per_pod": c.per_pod,
                }
                for c in self.consumers
            ],
            "explanation": self.explanation,
        }


def resolve_surge(
    replicas: int, strategy: str = "RollingUpdate", max_surge: int | str | None = None
) -> int:
    """Extra pods a rollout may add, as Kubernetes computes it.

    ``Recreate`` never surges; ``RollingUpdate`` takes ``maxSurge`` (default ``25%``) as an
    absolute number or a percentage of ``replicas`` rounded up.
    """
    _check_int("replicas", replicas, minimum=0)
    if strategy == "Recreate":
        return 0
    if strategy != "RollingUpdate":
        raise PlannerError("strategy", f"must be RollingUpdate or Recreate, got {strategy!r}")
    if max_surge is None:
        max_surge = "25%"
    if isinstance(max_surge, str):
        text = max_surge.strip()
        if text.endswith("%"):
            try:
                percent = int(text[:-1])
            except ValueError:
                percent = -1
            if percent < 0:
                raise PlannerError(
                    "maxSurge", f"must be an integer or a percentage like '25%', got {max_surge!r}"
                )
            return math.ceil(replicas * percent / 100)
        try:
            max_surge = int(text)
        except ValueError:
            raise PlannerError(
                "maxSurge", f"must be an integer or a percentage like '25%', got {max_surge!r}"
            ) from None
    _check_int("maxSurge", max_surge, minimum=0)
    return max_surge


def pods_that_may_hold(replicas: int, surge: int, live: int = 0, terminating: int = 0) -> int:
    """PgBouncer pods that may hold server connections.

    The Deployment controller keeps at most ``replicas + surge`` pods that are not terminating
    (more only while a scale-down is under way, which ``live`` shows) and does not count
    terminating pods at all; a terminating PgBouncer still serves and drains until it is gone.
    The result is at least ``max(live, replicas + surge) + terminating``.
    """
    if live > replicas + surge:
        # A scale-down the controller has not carried out yet: these pods are about to
        # terminate with the limit they hold now, so the plan does not raise it meanwhile.
        return live + surge + terminating
    return max(live, replicas + surge) + terminating


def held_total(pods: int, held: tuple[int, ...], max_db: int) -> int:
    """Server connections ``pods`` may hold when each gets ``max_db`` and the terminating pods of
    ``held`` may keep their larger limits."""
    return (pods - len(held)) * max_db + sum(max(h, max_db) for h in held)


@dataclasses.dataclass(frozen=True)
class SafeSizing:
    """PgBouncer limits for any budget, even one that cannot be planned."""

    pgbouncer: PgBouncerPlan
    fits: bool
    """False when even one server connection per pod exceeds the budget."""
    message: str


def safe_pgbouncer(available: int, pgbouncer: PgBouncer) -> SafeSizing:
    """The safest PgBouncer sizing that still serves: ``max(1, available // pods)`` per pod.

    Never raises: it is what the operator writes when a budget is invalid or infeasible, so that
    old, larger limits are never kept. When even 1 per pod does not fit, every pod gets 1, and
    only PostgreSQL's own connection limit for the role keeps the database inside its budget.
    """
    pods = max(1, pgbouncer.pods)
    max_db = max(1, available // pods)
    held = pgbouncer.held[: pgbouncer.terminating]
    if held:
        # The other pods share what the known terminating pods may still hold: the largest
        # limit m with others x m + sum(max(h, m)) <= available (a pod may also read m).
        low, high = 1, max_db
        while low < high:
            mid = (low + high + 1) // 2
            if held_total(pods, held, mid) <= available:
                low = mid
            else:
                high = mid - 1
        max_db = low
    reserve = max_db // 10
    fits = held_total(pods, held, max_db) <= available
    if fits:
        message = (
            f"{pods} PgBouncer pod(s) that may hold server connections x max_db_connections "
            f"{max_db} = {pods * max_db} <= budget {available}"
        )
    else:
        message = (
            f"{pods} PgBouncer pod(s) that may hold server connections cannot each get one of the "
            f"{max(0, available)} budgeted connections: every pod gets max_db_connections 1 "
            f"({pods} in all) and only PostgreSQL's connection limit for the role keeps the "
            "database inside its budget; lower the PgBouncer replicas or its maxSurge, or raise "
            "maxConnections"
        )
    bouncer = PgBouncerPlan(
        replicas=pgbouncer.replicas,
        surge=pgbouncer.surge,
        default_pool_size=max_db - reserve,
        max_db_connections=max_db,
        reserve_pool_size=reserve,
        max_client_conn=max(1, pgbouncer.max_client_conn),
    )
    return SafeSizing(bouncer, fits, message)


def plan(
    budget: Budget, pgbouncer: PgBouncer, consumers: list[Consumer] | tuple[Consumer, ...]
) -> Plan:
    """Size every pool in the chain; raise PlannerError for input that makes no sense."""
    _validate(budget, pgbouncer, consumers)
    available = budget.available
    bouncer_pods = pgbouncer.pods
    max_db = safe_pgbouncer(available, pgbouncer).pgbouncer.max_db_connections
    reserve = max_db // 10
    capacity = available if pgbouncer.replicas == 0 else min(available, pgbouncer.replicas * max_db)
    held = pgbouncer.held[: pgbouncer.terminating]
    server_total = held_total(bouncer_pods, held, max_db) if bouncer_pods else 0

    peak_workers = sum(c.peak_workers for c in consumers)
    overcommitted = peak_workers > capacity
    shares = [1] * len(consumers) if overcommitted else _weighted_shares(consumers, capacity)

    planned = tuple(_split(c, share) for c, share in zip(consumers, shares, strict=True))
    client_total = sum(p.peak_total for p in planned)
    bouncer = PgBouncerPlan(
        replicas=pgbouncer.replicas,
        surge=pgbouncer.surge,
        default_pool_size=max_db - reserve,
        max_db_connections=max_db,
        reserve_pool_size=reserve,
        max_client_conn=max(pgbouncer.max_client_conn, client_total),
    )
    result = Plan(
        max_connections=budget.max_connections,
        reserved=budget.reserved,
        budget=available,
        capacity=capacity,
        server_total=server_total,
        pgbouncer_pods=bouncer_pods,
        client_total=client_total,
        overcommitted=overcommitted,
        pgbouncer=bouncer,
        consumers=planned,
        explanation="",
    )
    raised = bouncer.max_client_conn > pgbouncer.max_client_conn
    return dataclasses.replace(result, explanation=_explain(result, peak_workers, raised))


def needed_max_connections(result: Plan) -> int:
    """The smallest ``maxConnections`` that gives every worker of ``result`` one connection."""
    workers = sum((c.replicas + c.surge) * c.workers for c in result.consumers)
    b = result.pgbouncer
    if b.replicas == 0:
        return result.reserved + max(1, workers)
    per_bouncer = max(1, math.ceil(workers / b.replicas))
    return result.reserved + result.pgbouncer_pods * per_bouncer


def _explain(result: Plan, peak_workers: int, raised_client_conn: bool) -> str:
    b = result.pgbouncer
    counted = ""
    if result.pgbouncer_pods != b.replicas + b.surge:
        counted = (
            f"; {result.pgbouncer_pods} pods may hold server connections, terminating included"
        )
    parts = [
        f"Budget {result.budget} = max_connections {result.max_connections}"
        f" - reserved {result.reserved}.",
        f"{b.replicas} PgBouncer replica(s) (+{b.surge} surge{counted}) get max_db_connections "
        f"{b.max_db_connections} each (default_pool_size {b.default_pool_size} + reserve "
        f"{b.reserve_pool_size}), so at most {result.server_total} server connections"
        " even mid-rollout;",
        f"they hold {result.capacity} in steady state.",
    ]
    who = ", ".join(
        f"{c.name} {c.replicas}+{c.surge} pods x {c.workers} workers" for c in result.consumers
    )
    parts.append(f"{peak_workers} worker(s) incl. surge pods ({who}) share them.")
    if result.overcommitted:
        parts.append(
            f"Overcommitted: {peak_workers} workers need at least {peak_workers} connections but "
            f"only {result.capacity} exist, so every worker gets pool_size 1 and PgBouncer queues "
            f"the rest; raise maxConnections to at least {needed_max_connections(result)}, "
            f"or lower replicas or workersPerPod."
        )
    else:
        given = ", ".join(
            f"{c.name} (weight {c.weight}) pool_size {c.pool_size} + max_overflow {c.max_overflow}"
            f" per worker = {c.per_pod} per pod"
            for c in result.consumers
        )
        parts.append(f"Shares: {given}; {result.client_total} of {result.capacity} used.")
    if raised_client_conn:
        parts.append(f"max_client_conn was raised to {b.max_client_conn}, the workers' total.")
    return " ".join(parts)


def _weighted_shares(consumers: list[Consumer] | tuple[Consumer, ...], capacity: int) -> list[int]:
    """Raise shares in weight order, one connection per worker at a time, while they fit."""
    shares = [1] * len(consumers)
    left = capacity - sum(c.peak_workers for c in consumers)
    lcm = math.lcm(*(c.weight for c in consumers))
    # The next step of consumer i lifts its share to s+1 at level (s+1)/weight; compare levels
    # as integers scaled by the weights' lcm. The index breaks ties, so the order of steps never
    # depends on replicas, which makes the result monotone in them.
    heap = [((1 + 1) * (lcm // c.weight), i) for i, c in enumerate(consumers) if c.peak_workers > 0]
    heapq.heapify(heap)
    while heap:
        _, i = heap[0]
        cost = consumers[i].peak_workers
        if cost > left:
            break
        left -= cost
        shares[i] += 1
        heapq.heapreplace(heap, ((shares[i] + 1) * (lcm // consumers[i].weight), i))
    return shares


def _split(consumer: Consumer, share: int) -> ConsumerPlan:
    if consumer.overflow == "half":
        overflow = share // 2
    elif consumer.overflow == "quarter":
        overflow = share // 4
    else:
        overflow = 0
    return ConsumerPlan(
        name=consumer.name,
        replicas=consumer.replicas,
        surge=consumer.surge,
        workers=consumer.workers,
        weight=consumer.weight,
        overflow=consumer.overflow,
        pool_size=share - overflow,
        max_overflow=overflow,
    )


def _validate(
    budget: Budget, pgbouncer: PgBouncer, consumers: list[Consumer] | tuple[Consumer, ...]
) -> None:
    _check_int("maxConnections", budget.max_connections, minimum=1)
    _check_int("reserved", budget.reserved, minimum=0)
    if budget.reserved >= budget.max_connections:
        raise PlannerError(
            "reserved",
            f"must be below maxConnections ({budget.max_connections}), got {budget.reserved}",
        )
    _check_int("pgbouncer.replicas", pgbouncer.replicas, minimum=0)
    _check_int("pgbouncer.surge", pgbouncer.surge, minimum=0)
    _check_int("pgbouncer.maxClientConn", pgbouncer.max_client_conn, minimum=1)
    _check_int("pgbouncer.live", pgbouncer.live, minimum=0)
    _check_int("pgbouncer.terminating", pgbouncer.terminating, minimum=0)
    for held in pgbouncer.held:
        _check_int("pgbouncer.held", held, minimum=1)
    pods = pgbouncer.pods
    if pods > budget.available:
        raise PlannerError(
            "pgbouncer.replicas",
            f"{pods} PgBouncer pods (replicas + surge, or the pods that exist, plus terminating "
            "ones) cannot each get one of the "
            f"{budget.available} budgeted connections; lower the PgBouncer replicas or its "
            f"maxSurge, or raise maxConnections",
        )
    if not consumers:
        raise PlannerError("consumers", "at least one consumer is needed")
    seen: set[str] = set()
    for c in consumers:
        if not isinstance(c.name, str) or not c.name:
            raise PlannerError("consumers.name", "every consumer needs a non-empty name")
        if c.name in seen:
            raise PlannerError(f"consumers[{c.name}]", "duplicate consumer name")
        seen.add(c.name)
        _check_int(f"consumers[{c.name}].replicas", c.replicas, minimum=0)
        _check_int(f"consumers[{c.name}].surge", c.surge, minimum=0)
        _check_int(f"consumers[{c.name}].workers", c.workers, minimum=1)
        _check_int(f"consumers[{c.name}].weight", c.weight, minimum=1)
        if c.overflow not in OVERFLOW_POLICIES:
            raise PlannerError(
                f"consumers[{c.name}].overflow",
                f"must be one of {', '.join(OVERFLOW_POLICIES)}, got {c.overflow!r}",
            )


def _check_int(field: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlannerError(field, f"must be an integer, got {value!r}")
    if value < minimum:
        raise PlannerError(field, f"must be >= {minimum}, got {value}")
