"""The connection-budget planner: pure arithmetic, no I/O.

Given a database budget, the PgBouncer replicas and the consumers (Deployments running gunicorn
workers with one SQLAlchemy pool each), compute every limit in the chain. The queue forms in
PgBouncer, in front of a small server-side pool per consumer; app pools are as large as a worker
can use. Two sides:

* **server side, per PgBouncer pod**: ``max_db_connections = budget // pods`` where ``pods``
  counts every pod that may hold server connections (``max(live, replicas + surge) +
  terminating``: the Deployment controller does not count terminating pods against maxSurge),
  so that ``pods x max_db_connections <= budget`` holds in every state the operator can see; a
  terminating pod keeps lowering the others' limits until it is gone (lower before raise).
  ``max_user_connections = max_db_connections`` caps the sum over the consumers' aliases;
  ``reserve_pool_size`` is a tenth of it and ``default_pool_size`` the rest (the main ini's
  direct entry). Every consumer with replicas gets a PgBouncer database alias (its name) whose
  ``pool_size`` (*server_pool*) is its weighted share of ``max_db_connections``
  (:func:`apportion`: within one connection of exact proportion, at least 1 each, and never
  raised when ``max_db_connections`` falls); a consumer scaled to zero keeps an alias of 1,
  outside the split, so that its first pod can connect;
* **client side, per worker**: a *share* of concurrent transactions (``pool_size +
  max_overflow``) as large as the worker can use (:attr:`Consumer.cap`: its threads, or for an
  async worker ``max_pool_per_worker`` or :data:`ASYNC_WORKER_CAP`) and as large as its
  consumer's server connections over all PgBouncer replicas, divided by the pod's workers: one
  busy pod can use its consumer's whole server share while the others idle. Every pod, surge
  pods included, must fit PgBouncer's client slots (``max_client_conn x replicas``); when they
  do not, the largest shares shrink first, one connection at a time, never below 1;
* the plan is *overcommitted* when the server side cannot give every consumer with replicas one
  connection per PgBouncer pod, or the client side cannot fit with every share at 1; the
  explanation names the side and what to change.

The standbys (:class:`ReadServers`) are planned apart from the primary by
:func:`plan_with_reads`: the write plan exactly as :func:`plan` gives it, and a read plan within
each standby's own budget, sized for every read connection landing on one standby.

Bad input raises :class:`PlannerError`, whose ``field`` names what to change.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

from poolwarden import pgbouncer_ini

ASYNC_WORKER_CAP = 64
"""The share of an async worker (``threads == 0``) unless its consumer sets
``max_pool_per_worker``: one event loop rarely keeps more transactions busy at once, and the cap
still lets one busy pod of a few workers use most of its consumer's server share."""

OVERFLOW_FRACTIONS: dict[str, int] = {"none": 0, "quarter": 4, "half": 2}
"""The overflow policies, the one place they are defined: how a worker's share splits into
SQLAlchemy ``pool_size`` and ``max_overflow`` (``max_overflow = share // d``; ``none``, d = 0,
keeps it all pooled). The CRD enum, the chart's schema enum and the CLI help are checked against
it (tests/unit/test_overflow_policies.py)."""

OVERFLOW_POLICIES = tuple(OVERFLOW_FRACTIONS)

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
    """The PgBouncer Deployment: replicas, rollout surge, its ``max_client_conn``, and the
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
    """One Deployment whose pods run ``workers`` gunicorn workers, each with one pool.

    ``threads`` > 0: threaded workers (gunicorn gthread) with that many threads; 0: async
    workers (uvicorn). ``max_pool_per_worker`` > 0 caps a worker's share (0: no cap of its own).
    """

    name: str
    replicas: int
    workers: int = 1
    weight: int = 1
    surge: int = 0
    overflow: str = "none"
    threads: int = 0
    max_pool_per_worker: int = 0

    @property
    def cap(self) -> int:
        """The most concurrent transactions one worker can use: its threads (more is waste), or
        for an async worker ``max_pool_per_worker`` when set, else :data:`ASYNC_WORKER_CAP`;
        never above ``max_pool_per_worker`` when that is set."""
        if self.threads > 0:
            wanted = self.threads
        else:
            wanted = self.max_pool_per_worker or ASYNC_WORKER_CAP
        if self.max_pool_per_worker > 0:
            wanted = min(wanted, self.max_pool_per_worker)
        return max(1, wanted)

    @property
    def active(self) -> bool:
        """A consumer with replicas takes part in the weighted split of the server side."""
        return self.replicas > 0

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
    threads: int
    cap: int
    """The most one worker can use (:attr:`Consumer.cap`); ``share <= cap``."""
    server_pool: int
    """The ``pool_size`` of this consumer's database alias in each PgBouncer pod."""
    pool_size: int
    max_overflow: int
    server_total: int = 0
    """Server connections this consumer may hold over every PgBouncer replica in steady state:
    ``server_pool x pgbouncer.replicas``."""

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

    @property
    def busy(self) -> int:
        """Transactions this consumer can run at once when all its pods are saturated: what its
        server connections and its workers' shares both allow."""
        return min(self.server_total, self.replicas * self.per_pod)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "replicas": self.replicas,
            "surge": self.surge,
            "workers": self.workers,
            "weight": self.weight,
            "overflow": self.overflow,
            "threads": self.threads,
            "cap": self.cap,
            "server_pool": self.server_pool,
            "server_total": self.server_total,
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "share": self.share,
            "per_pod": self.per_pod,
        }


@dataclasses.dataclass(frozen=True)
class PgBouncerPlan:
    replicas: int
    surge: int
    default_pool_size: int
    max_db_connections: int
    reserve_pool_size: int
    max_client_conn: int
    max_user_connections: int


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
    """Client connections all workers, surge pods included, may open to PgBouncer."""
    overcommitted: bool
    pgbouncer: PgBouncerPlan
    consumers: tuple[ConsumerPlan, ...]
    explanation: str
    client_limit: int
    """Client connections the PgBouncer replicas accept: ``max_client_conn x max(1, replicas)``."""
    utilization: float
    """The fraction of the budget that can be busy at once when every consumer is saturated,
    rounded to 2 decimals."""
    server_short: bool = False
    """Overcommitted on the server side: some PgBouncer pod cannot give every consumer with
    replicas one server connection."""
    client_short: bool = False
    """Overcommitted on the client side: the workers do not fit ``client_limit`` even at 1."""

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
            "client_limit": self.client_limit,
            "utilization": self.utilization,
            "overcommitted": self.overcommitted,
            "server_short": self.server_short,
            "client_short": self.client_short,
            "pgbouncer": dataclasses.asdict(self.pgbouncer),
            "max_user_connections": self.pgbouncer.max_user_connections,
            "consumers": [c.to_dict() for c in self.consumers],
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

    ``max_user_connections`` equals ``max_db_connections``: it caps the sum over every database
    alias of the one app user (``max_db_connections`` caps each alias on its own).

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
        max_user_connections=max_db,
    )
    return SafeSizing(bouncer, fits, message)


def plan(
    budget: Budget, pgbouncer: PgBouncer, consumers: list[Consumer] | tuple[Consumer, ...]
) -> Plan:
    """Size every pool in the chain; raise PlannerError for input that makes no sense."""
    _validate(budget, pgbouncer, consumers)
    available = budget.available
    safe = safe_pgbouncer(available, pgbouncer)
    bouncer = safe.pgbouncer
    max_db = bouncer.max_db_connections
    replicas = pgbouncer.replicas
    capacity = available if replicas == 0 else min(available, replicas * max_db)
    held = pgbouncer.held[: pgbouncer.terminating]
    server_total = held_total(pgbouncer.pods, held, max_db) if pgbouncer.pods else 0

    # Server side: the active consumers split each pod's connections by weight.
    active = [c for c in consumers if c.active]
    split = iter(apportion(max_db, [c.weight for c in active]))
    pools = [next(split) if c.active else 1 for c in consumers]
    server_short = not safe.fits or max_db < len(active)

    # Client side: as much as a worker can use and one pod could get, then fit the client slots.
    client_limit = pgbouncer.max_client_conn * max(1, replicas)
    wanted = [
        max(1, min(c.cap, math.ceil(pool * replicas / c.workers)))
        for c, pool in zip(consumers, pools, strict=True)
    ]
    shares = _fit_clients(consumers, wanted, client_limit)
    planned = tuple(
        _split(c, pool, share, replicas)
        for c, pool, share in zip(consumers, pools, shares, strict=True)
    )
    client_total = sum(p.peak_total for p in planned)
    client_short = client_total > client_limit
    busy = min(sum(p.busy for p in planned), replicas * bouncer.max_user_connections)
    result = Plan(
        max_connections=budget.max_connections,
        reserved=budget.reserved,
        budget=available,
        capacity=capacity,
        server_total=server_total,
        pgbouncer_pods=pgbouncer.pods,
        client_total=client_total,
        overcommitted=server_short or client_short,
        pgbouncer=bouncer,
        consumers=planned,
        explanation="",
        client_limit=client_limit,
        utilization=round(busy / available, 2),
        server_short=server_short,
        client_short=client_short,
    )
    return dataclasses.replace(result, explanation=_explain(result))


def apportion(seats: int, weights: Sequence[int]) -> list[int]:
    """Split ``seats`` by ``weights``: every party gets at least 1, and the sum is ``seats``
    when there are at least as many seats as parties (else every party gets 1).

    Balinski and Young's quota method, seat by seat from one each: the next seat goes to the
    party with the largest ``weight / (seats_held + 1)`` among those still below their exact
    quota at the new total (ties: the earlier party). So each party stays within one seat of
    ``seats x weight / sum(weights)`` whenever that quota is at least 1, and a smaller total
    never gives any party more (fewer PgBouncer connections never raise an alias's pool).
    """
    given = [1] * len(weights)
    total = sum(weights)
    if not weights:
        return given
    for house in range(len(weights) + 1, seats + 1):
        best = -1
        for i, weight in enumerate(weights):
            below_quota = given[i] * total < weight * house
            if below_quota and (
                best < 0 or weight * (given[best] + 1) > weights[best] * (given[i] + 1)
            ):
                best = i
        given[best] += 1
    return given


def needed_max_connections(result: Plan) -> int:
    """The smallest ``maxConnections`` that gives every consumer with replicas one server
    connection in each PgBouncer pod that may hold connections."""
    active = sum(1 for c in result.consumers if c.replicas > 0)
    return result.reserved + max(1, result.pgbouncer_pods) * max(1, active)


def needed_max_client_conn(result: Plan) -> int:
    """The smallest ``max_client_conn`` that fits every worker, surge pods included, at 1."""
    workers = sum((c.replicas + c.surge) * c.workers for c in result.consumers)
    return max(1, math.ceil(workers / max(1, result.pgbouncer.replicas)))


def shortfall(result: Plan) -> str:
    """What an overcommitted plan lacks, naming the side and what to change ("" when none)."""
    b = result.pgbouncer
    parts = []
    if result.server_short:
        active = sum(1 for c in result.consumers if c.replicas > 0)
        parts.append(
            f"Overcommitted on the server side: {active} consumer(s) with replicas need at "
            f"least 1 server connection each in every PgBouncer pod, but each of the "
            f"{result.pgbouncer_pods} pod(s) gets max_db_connections {b.max_db_connections}; "
            f"max_user_connections still caps each pod and PostgreSQL's role limit the budget. "
            f"Raise maxConnections to at least {needed_max_connections(result)}, or lower the "
            "PgBouncer replicas or its maxSurge, or scale a consumer to zero."
        )
    if result.client_short:
        workers = sum((c.replicas + c.surge) * c.workers for c in result.consumers)
        parts.append(
            f"Overcommitted on the client side: {workers} worker(s) incl. surge pods need at "
            f"least {workers} client connections, but PgBouncer accepts {result.client_limit} "
            f"(max_client_conn {b.max_client_conn} x {max(1, b.replicas)} replica(s)); every "
            f"worker gets 1. Raise maxClientConn to at least {needed_max_client_conn(result)} "
            "or add PgBouncer replicas, or lower replicas or workersPerPod."
        )
    return " ".join(parts)


def _explain(result: Plan) -> str:
    b = result.pgbouncer
    counted = ""
    if result.pgbouncer_pods != b.replicas + b.surge:
        counted = (
            f"; {result.pgbouncer_pods} pods may hold server connections, terminating included"
        )
    pools = ", ".join(
        f"{c.name} (weight {c.weight}) {c.server_pool}"
        + ("" if c.replicas else " (no replicas: outside the split)")
        for c in result.consumers
    )
    clients = ", ".join(
        f"{c.name} {c.replicas}+{c.surge} pods x {c.workers} workers x share {c.share} "
        f"(pool_size {c.pool_size} + max_overflow {c.max_overflow}, cap {c.cap})"
        for c in result.consumers
    )
    parts = [
        f"Budget {result.budget} = max_connections {result.max_connections}"
        f" - reserved {result.reserved}.",
        f"{b.replicas} PgBouncer replica(s) (+{b.surge} surge{counted}) get max_db_connections "
        f"{b.max_db_connections} = max_user_connections each (default_pool_size "
        f"{b.default_pool_size} + reserve {b.reserve_pool_size}), so at most "
        f"{result.server_total} server connections even mid-rollout;",
        f"they hold {result.capacity} in steady state.",
        f"Server side, each PgBouncer pod's pool per consumer by weight: {pools}.",
        f"Client side: {clients}; client total {result.client_total} "
        f"{'>' if result.client_short else '<='} limit {result.client_limit} (max_client_conn "
        f"{b.max_client_conn} x {max(1, b.replicas)}).",
        f"Utilization {result.utilization:.2f}: the part of the budget busy at once when every "
        "consumer is saturated; requests beyond it queue in PgBouncer (query_wait_timeout).",
    ]
    short = shortfall(result)
    if short:
        parts.append(short)
    return " ".join(parts)


def _fit_clients(consumers: Sequence[Consumer], shares: Sequence[int], limit: int) -> list[int]:
    """Shrink the largest shares first, one connection at a time (ties: the lower weight, then
    the earlier consumer), never below 1, until every worker of every pod, surge included, fits
    ``limit``. The order of the steps never depends on replicas, so more pods never raise a
    share."""
    shares = list(shares)
    total = sum(c.peak_workers * s for c, s in zip(consumers, shares, strict=True))
    while total > limit:
        movable = [i for i, c in enumerate(consumers) if c.peak_workers > 0 and shares[i] > 1]
        if not movable:
            break  # every worker at 1: the client side is overcommitted
        top = max(shares[i] for i in movable)
        for i in sorted(movable, key=lambda i: consumers[i].weight):
            if shares[i] == top and total > limit:
                shares[i] -= 1
                total -= consumers[i].peak_workers
    return shares


def _split(consumer: Consumer, server_pool: int, share: int, replicas: int) -> ConsumerPlan:
    divisor = OVERFLOW_FRACTIONS[consumer.overflow]
    overflow = share // divisor if divisor else 0
    return ConsumerPlan(
        name=consumer.name,
        replicas=consumer.replicas,
        surge=consumer.surge,
        workers=consumer.workers,
        weight=consumer.weight,
        overflow=consumer.overflow,
        threads=consumer.threads,
        cap=consumer.cap,
        server_pool=server_pool,
        pool_size=share - overflow,
        max_overflow=overflow,
        server_total=server_pool * replicas,
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
        if not re.fullmatch(pgbouncer_ini.ALIAS_PATTERN, c.name):
            raise PlannerError(
                f"consumers[{c.name}].name",
                f"must match {pgbouncer_ini.ALIAS_PATTERN} (it names the consumer's PgBouncer "
                f"database alias), got {c.name[:70]!r}",
            )
        if c.name in pgbouncer_ini.RESERVED_ALIASES:
            raise PlannerError(
                f"consumers[{c.name}].name", "is PgBouncer's admin console; choose another name"
            )
        if c.name in seen:
            raise PlannerError(f"consumers[{c.name}]", "duplicate consumer name")
        seen.add(c.name)
        _check_int(f"consumers[{c.name}].replicas", c.replicas, minimum=0)
        _check_int(f"consumers[{c.name}].surge", c.surge, minimum=0)
        _check_int(f"consumers[{c.name}].workers", c.workers, minimum=1)
        _check_int(f"consumers[{c.name}].weight", c.weight, minimum=1)
        _check_int(f"consumers[{c.name}].threads", c.threads, minimum=0)
        _check_int(f"consumers[{c.name}].max_pool_per_worker", c.max_pool_per_worker, minimum=0)
        if c.overflow not in OVERFLOW_FRACTIONS:
            raise PlannerError(
                f"consumers[{c.name}].overflow",
                f"must be one of {', '.join(OVERFLOW_POLICIES)}, got {c.overflow!r}",
            )


def _check_int(field: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlannerError(field, f"must be an integer, got {value!r}")
    if value < minimum:
        raise PlannerError(field, f"must be >= {minimum}, got {value}")


# ------------------------------------------------------------------ read replicas (standbys)
#
# The standbys' budget is per server: every standby has its own max_connections. The read
# aliases of every PgBouncer pod point at one -ro Service, and kube-proxy picks a standby per TCP
# connection, so any server connection of any pod may land on any standby; when a standby goes
# down or restarts, its connections reconnect to the others. The read plan is therefore sized
# for the worst case: every read server connection of every PgBouncer pod that may hold
# connections on ONE standby. More standbys add CPU for reads, not planned connections.


@dataclasses.dataclass(frozen=True)
class ReadServers:
    """The streaming standbys behind one read-only Service, all alike: ``replicas`` standbys,
    each with its own ``max_connections`` minus ``reserved`` as its budget."""

    replicas: int
    max_connections: int
    reserved: int = 0

    @property
    def available(self) -> int:
        """One standby's budget: ``max_connections - reserved`` (a budget is per server)."""
        return self.max_connections - self.reserved


@dataclasses.dataclass(frozen=True)
class ReadPlan:
    """The read side: per PgBouncer pod a read pool per consumer, per worker a read pool.

    A consumer's ``server_pool`` is 0 when the standbys' budget cannot give it one connection
    per PgBouncer pod (or it has no replicas): its reads stay on the primary, within the write
    plan. Its workers' ``pool_size``/``max_overflow`` are 0 then.
    """

    replicas: int
    """Standbys behind the read-only Service."""
    max_connections: int
    reserved: int
    budget: int
    """One standby's budget: ``max_connections - reserved``."""
    pgbouncer_pods: int
    """PgBouncer pods that may hold server connections (the write plan's count)."""
    max_db_connections: int
    """Read server connections one PgBouncer pod may hold, over all its read aliases."""
    server_total: int
    """Read server connections all PgBouncer pods that may hold them may open, all of which may
    land on one standby: ``pgbouncer_pods x max_db_connections <= budget``."""
    capacity: int
    """The same over the PgBouncer replicas in steady state."""
    consumers: tuple[ConsumerPlan, ...]
    client_total: int
    """Client connections the workers' read pools, surge pods included, may open to PgBouncer."""
    client_limit: int
    """The client slots the write plan leaves: ``max_client_conn x max(1, replicas)`` minus the
    write plan's ``client_total`` (PgBouncer's ``max_client_conn`` counts both)."""
    utilization: float
    """Read transactions that can run at once when every consumer is saturated, over one
    standby's budget (the worst case), rounded to 2 decimals."""
    overcommitted: bool
    server_short: bool
    """Some consumer with replicas gets no read connection (its reads stay on the primary)."""
    client_short: bool
    """The read pools do not fit the client slots left even at 1 per worker."""
    explanation: str

    def consumer(self, name: str) -> ConsumerPlan:
        for item in self.consumers:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "max_connections": self.max_connections,
            "reserved": self.reserved,
            "budget": self.budget,
            "pgbouncer_pods": self.pgbouncer_pods,
            "max_db_connections": self.max_db_connections,
            "server_total": self.server_total,
            "capacity": self.capacity,
            "client_total": self.client_total,
            "client_limit": self.client_limit,
            "utilization": self.utilization,
            "overcommitted": self.overcommitted,
            "server_short": self.server_short,
            "client_short": self.client_short,
            "consumers": [c.to_dict() for c in self.consumers],
            "explanation": self.explanation,
        }


@dataclasses.dataclass(frozen=True)
class ReadWritePlan:
    """The write plan (exactly :func:`plan`'s) and the read plan (None without standbys)."""

    write: Plan
    read: ReadPlan | None


def plan_with_reads(
    budget: Budget,
    pgbouncer: PgBouncer,
    consumers: list[Consumer] | tuple[Consumer, ...],
    reads: ReadServers,
) -> ReadWritePlan:
    """The write plan, as :func:`plan` gives it, and the read plan for the standbys.

    Read side, per PgBouncer pod: ``max_db_connections = budget // pods`` of ONE standby's
    budget over every PgBouncer pod that may hold connections (the worst case: they may all land
    on one standby), split by weight among the consumers with replicas (:func:`apportion`). When
    a pod has fewer read connections than there are such consumers, the heaviest get 1 each
    (ties: the earlier consumer) and the rest 0: their reads stay on the primary; the sum of a
    pod's read pools never exceeds its ``max_db_connections``. Per worker, like the write side:
    ``min(cap, ceil(read server total / workers))``, at least 1 for a consumer with a read pool,
    fitted into the client slots the write plan leaves.
    """
    write = plan(budget, pgbouncer, consumers)
    _validate_reads(reads)
    if reads.replicas == 0:
        return ReadWritePlan(write, None)
    available = reads.available
    pods = pgbouncer.pods
    max_db = available // max(1, pods)
    replicas = pgbouncer.replicas

    active = [i for i, c in enumerate(consumers) if c.active]
    pools = [0] * len(consumers)
    if max_db >= len(active):
        split = apportion(max_db, [consumers[i].weight for i in active])
        for i, seats in zip(active, split, strict=True):
            pools[i] = seats
    else:
        for i in sorted(active, key=lambda i: -consumers[i].weight)[:max_db]:
            pools[i] = 1
    server_short = any(pools[i] == 0 for i in active)

    client_limit = max(0, write.client_limit - write.client_total)
    wanted = [
        max(1, min(c.cap, math.ceil(pool * replicas / c.workers))) if pool else 0
        for c, pool in zip(consumers, pools, strict=True)
    ]
    shares = _fit_clients(consumers, wanted, client_limit)
    planned = tuple(
        _split(c, pool, share, replicas)
        for c, pool, share in zip(consumers, pools, shares, strict=True)
    )
    client_total = sum(p.peak_total for p in planned)
    client_short = client_total > client_limit
    capacity = min(available, replicas * max_db) if replicas else 0
    busy = min(sum(p.busy for p in planned), capacity)
    read = ReadPlan(
        replicas=reads.replicas,
        max_connections=reads.max_connections,
        reserved=reads.reserved,
        budget=available,
        pgbouncer_pods=pods,
        max_db_connections=max_db,
        server_total=pods * max_db,
        capacity=capacity,
        consumers=planned,
        client_total=client_total,
        client_limit=client_limit,
        utilization=round(busy / available, 2),
        overcommitted=server_short or client_short,
        server_short=server_short,
        client_short=client_short,
        explanation="",
    )
    return ReadWritePlan(write, dataclasses.replace(read, explanation=_explain_reads(read)))


def needed_read_max_connections(read: ReadPlan) -> int:
    """The smallest standby ``maxConnections`` that gives every consumer with replicas one read
    connection in each PgBouncer pod that may hold connections."""
    active = sum(1 for c in read.consumers if c.replicas > 0)
    return read.reserved + max(1, read.pgbouncer_pods) * max(1, active)


def _explain_reads(read: ReadPlan) -> str:
    pools = ", ".join(
        f"{c.name} (weight {c.weight}) {c.server_pool}"
        + ("" if c.replicas else " (no replicas)")
        + (" (reads on the primary)" if not c.server_pool else "")
        for c in read.consumers
    )
    clients = ", ".join(
        f"{c.name} share {c.share} (pool_size {c.pool_size} + max_overflow {c.max_overflow}, "
        f"cap {c.cap})"
        for c in read.consumers
    )
    parts = [
        f"Read side: {read.replicas} standby(s), each its own budget {read.budget} = "
        f"max_connections {read.max_connections} - reserved {read.reserved}.",
        f"Any read server connection may land on any standby (one read-only Service), so the "
        f"{read.pgbouncer_pods} PgBouncer pod(s) that may hold connections get "
        f"{read.max_db_connections} read connections each: at most {read.server_total} on one "
        f"standby, {read.capacity} in steady state.",
        f"Each PgBouncer pod's read pool per consumer by weight: {pools}.",
        f"Read pools per worker: {clients}; read client total {read.client_total} "
        f"{'>' if read.client_short else '<='} the {read.client_limit} client slots the write "
        "plan leaves.",
        f"Read utilization {read.utilization:.2f} of one standby's budget.",
    ]
    if read.server_short:
        parts.append(
            "Short on the read side: some consumer(s) with replicas get no read connection and "
            f"read from the primary. Raise the standbys' maxConnections to at least "
            f"{needed_read_max_connections(read)}, or lower the PgBouncer replicas or its "
            "maxSurge."
        )
    if read.client_short:
        parts.append(
            "Short on the read side's client slots: every read pool is 1 and still does not fit "
            "what the write plan leaves of max_client_conn; raise maxClientConn or add PgBouncer "
            "replicas."
        )
    return " ".join(parts)


def _validate_reads(reads: ReadServers) -> None:
    _check_int("readReplicas.replicas", reads.replicas, minimum=0)
    _check_int("readReplicas.maxConnections", reads.max_connections, minimum=1)
    _check_int("readReplicas.reserved", reads.reserved, minimum=0)
    if reads.reserved >= reads.max_connections:
        raise PlannerError(
            "readReplicas.reserved",
            f"must be below the standbys' maxConnections ({reads.max_connections}), got "
            f"{reads.reserved}",
        )
