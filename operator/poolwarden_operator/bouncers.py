"""Pure: what each PgBouncer pod is really running, read from its exporter sidecar.

Each ready PgBouncer pod with a container port named ``metrics`` (the chart's
``pgbouncer.metrics.enabled``: Debian's / the official prometheus-pgbouncer-exporter 0.10) is
asked for ``/metrics``. Its exposition carries the pod's effective configuration, as
PgBouncer's own ``SHOW DATABASES`` / ``SHOW CONFIG`` report it after its last ``RELOAD``, and
its ``SHOW POOLS`` numbers (``parse``):

- ``pgbouncer_databases_pool_size{name=<alias>, host, port, database}``: each alias's
  ``pool_size`` and where it points; ``pgbouncer_databases_max_connections{name=<alias>}``:
  its ``max_db_connections`` (the global one: the aliases set none of their own);
- ``pgbouncer_config_max_user_connections``, ``pgbouncer_config_max_client_connections``;
- ``pgbouncer_pools_{client,server}_*_connections{database=<alias>, user}``: SHOW POOLS.

``judge`` compares that with the sizing file the pod should run (``pgbouncer_ini.Sizing``):
every alias of the file present with its ``pool_size``, host, port and database, and the
limits above. ``default_pool_size`` and ``reserve_pool_size`` are not exported, so not judged.
``pgbouncer_up 0`` (the exporter cannot reach PgBouncer) or no answer: the pod does not
confirm. ``summary`` and ``condition`` fold the judgements into ``status.applied``,
``status.pgbouncer.pods`` and the ``Applied`` condition (bounded: ``applied.LISTED``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from poolwarden import pgbouncer_ini
from poolwarden_operator import applied

METRICS_PORT = "metrics"
"""The PgBouncer pod's container port of the exporter sidecar (the chart names it so)."""
METRICS_VALUE = "pgbouncer.metrics.enabled=true"
"""The chart value that gives PgBouncer pods the exporter (named in the condition's message)."""
MESSAGE_LIMIT = 300
"""Characters of one pod's message at most (status.pgbouncer.pods[].message)."""

UP = "pgbouncer_up"
POOL_SIZE = "pgbouncer_databases_pool_size"
MAX_CONNECTIONS = "pgbouncer_databases_max_connections"
MAX_USER_CONNECTIONS = "pgbouncer_config_max_user_connections"
MAX_CLIENT_CONN = "pgbouncer_config_max_client_connections"
POOL_SERIES = {
    "pgbouncer_pools_server_active_connections": "sv_active",
    "pgbouncer_pools_server_idle_connections": "sv_idle",
    "pgbouncer_pools_server_used_connections": "sv_used",
    "pgbouncer_pools_server_testing_connections": "sv_tested",
    "pgbouncer_pools_server_login_connections": "sv_login",
    "pgbouncer_pools_client_active_connections": "cl_active",
    "pgbouncer_pools_client_waiting_connections": "cl_waiting",
}
"""The exporter's SHOW POOLS series -> the SHOW POOLS column each one is."""
SERIES = (UP, POOL_SIZE, MAX_CONNECTIONS, MAX_USER_CONNECTIONS, MAX_CLIENT_CONN, *POOL_SERIES)
"""Every exporter series the ledger reads (the integration test checks the exporter has each)."""


@dataclasses.dataclass(frozen=True)
class Alias:
    """One database entry of a pod as PgBouncer runs it (SHOW DATABASES)."""

    host: str
    port: int
    dbname: str
    pool_size: int
    max_connections: int


@dataclasses.dataclass(frozen=True)
class Pool:
    """One alias's SHOW POOLS numbers, summed over its users."""

    sv_active: int = 0
    sv_idle: int = 0
    sv_used: int = 0
    sv_tested: int = 0
    sv_login: int = 0
    cl_active: int = 0
    cl_waiting: int = 0

    @property
    def server_idle(self) -> int:
        """Server connections held but not linked to a client (idle, used, tested, login)."""
        return self.sv_idle + self.sv_used + self.sv_tested + self.sv_login

    def plus(self, other: Pool) -> Pool:
        return Pool(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                       for f in dataclasses.fields(self)})  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Scrape:
    """What one exporter answered."""

    up: bool
    max_user_connections: int | None = None
    max_client_conn: int | None = None
    aliases: dict[str, Alias] = dataclasses.field(default_factory=dict)
    pools: dict[str, Pool] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Target:
    pod: str
    url: str


@dataclasses.dataclass(frozen=True)
class Report:
    """One pod's answer, or None with why it could not be read."""

    pod: str
    scrape: Scrape | None
    error: str = ""


def targets(pods: list[dict[str, Any]]) -> tuple[list[Target], list[str]]:
    """(the ready pods that can be asked, the ready pods without an exporter), sorted by name."""
    found, unconfirmable = [], []
    for pod in pods:
        if not applied.is_ready(pod):
            continue
        name = str(pod["metadata"]["name"])
        ip = (pod.get("status") or {}).get("podIP")
        port = applied.container_port(pod, METRICS_PORT)
        if ip and port:
            host = f"[{ip}]" if ":" in ip else ip
            found.append(Target(name, f"http://{host}:{port}/metrics"))
        else:
            unconfirmable.append(name)
    return sorted(found, key=lambda t: t.pod), sorted(unconfirmable)


def parse(text: str) -> Scrape:
    """An exporter's exposition -> the pod's effective config and SHOW POOLS numbers.

    ValueError when the text is no exposition (the caller reports the pod as unreadable).
    """
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"not a Prometheus exposition: {exc}") from exc
    up = False
    globals_: dict[str, int] = {}
    sizes: dict[str, dict[str, Any]] = {}
    pools: dict[str, Pool] = {}
    for family in families:
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, _int(sample.value)
            if name == UP:
                up = value == 1
            elif name in (MAX_USER_CONNECTIONS, MAX_CLIENT_CONN):
                globals_[name] = value
            elif name in (POOL_SIZE, MAX_CONNECTIONS) and labels.get("name"):
                entry = sizes.setdefault(labels["name"], {
                    "host": labels.get("host", ""), "port": _int(labels.get("port", 0)),
                    "dbname": labels.get("database", ""),
                })  # fmt: skip
                entry[name] = value
            elif name in POOL_SERIES and labels.get("database"):
                alias = labels["database"]
                one = Pool(**{POOL_SERIES[name]: value})
                pools[alias] = pools.get(alias, Pool()).plus(one)
    aliases = {
        alias: Alias(e["host"], e["port"], e["dbname"], e.get(POOL_SIZE, 0),
                     e.get(MAX_CONNECTIONS, 0))
        for alias, e in sizes.items()
    }  # fmt: skip
    return Scrape(
        up=up,
        max_user_connections=globals_.get(MAX_USER_CONNECTIONS),
        max_client_conn=globals_.get(MAX_CLIENT_CONN),
        aliases=aliases,
        pools=pools,
    )


def judge(scrape: Scrape, sizing: pgbouncer_ini.Sizing) -> list[str]:
    """How the pod's effective config differs from the sizing file; empty when it runs it."""
    if not scrape.up:
        return ["the exporter cannot read PgBouncer (pgbouncer_up 0)"]
    found = []
    for what, running, wanted in (
        ("max_user_connections", scrape.max_user_connections, sizing.max_user_connections),
        ("max_client_conn", scrape.max_client_conn, sizing.max_client_conn),
    ):
        if running != wanted:
            found.append(f"{what} {_shown(running)}, sizing file {wanted}")
    for database in sizing.databases:
        alias = scrape.aliases.get(database.name)
        if alias is None:
            found.append(f"alias {database.name} missing, sizing file pool_size "
                         f"{database.pool_size}")  # fmt: skip
            continue
        for what, running, wanted in (
            ("pool_size", alias.pool_size, database.pool_size),
            ("max_db_connections", alias.max_connections, sizing.max_db_connections),
            ("host", alias.host, database.host),
            ("port", alias.port, database.port),
            ("dbname", alias.dbname, database.dbname),
        ):
            if running != wanted:
                found.append(f"alias {database.name} {what} {running}, sizing file {wanted}")
    return found


@dataclasses.dataclass(frozen=True)
class Judged:
    """Every ready PgBouncer pod against the sizing file of ``generation``."""

    generation: int
    pods: tuple[tuple[str, str], ...]
    """(pod, why it does not confirm or "") of every pod asked, sorted by name."""
    unconfirmable: tuple[str, ...] = ()
    """Ready pods without an exporter (no container port named ``metrics``)."""

    @property
    def lagging(self) -> list[tuple[str, str]]:
        return [(pod, why) for pod, why in self.pods if why]


def judged(
    reports: list[Report], sizing: pgbouncer_ini.Sizing, generation: int,
    unconfirmable: tuple[str, ...] | list[str] = (),
) -> Judged:  # fmt: skip
    """Each asked pod judged against the sizing file (``judge``); an unreadable one lags."""
    found = []
    for r in reports:
        if r.scrape is None:
            found.append((r.pod, f"unreachable ({r.error or 'no answer'})"))
        else:
            found.append((r.pod, "; ".join(judge(r.scrape, sizing))[:MESSAGE_LIMIT]))
    return Judged(generation, tuple(sorted(found)), tuple(sorted(unconfirmable)))


def pods_status(j: Judged) -> list[dict[str, Any]]:
    """``status.pgbouncer.pods``: at most ``applied.LISTED``, the lagging ones first chosen,
    sorted by name."""
    chosen = (j.lagging + [p for p in j.pods if not p[1]])[: applied.LISTED]
    found = []
    for pod, why in sorted(chosen):
        entry: dict[str, Any] = {"name": pod, "applied": not why}
        if why:
            entry["message"] = why
        else:
            entry["generation"] = j.generation
        found.append(entry)
    return found


def summary(j: Judged) -> dict[str, Any]:
    """The PgBouncer half of ``status.applied``."""
    behind = j.lagging
    return {
        "pgbouncerPods": len(j.pods),
        "pgbouncerLaggingPods": len(behind),
        "pgbouncerLagging": [pod for pod, _ in behind[: applied.LISTED]],
    }


def condition(consumers: dict[str, Any], j: Judged | None) -> dict[str, Any]:
    """The ``Applied`` condition over the consumer pods (``applied.condition``) and the
    PgBouncer pods: True only when both confirm. ``j`` None: nothing was judged (no sizing)."""
    if j is None:
        return consumers
    behind = j.lagging
    parts = []
    if behind:
        named = "; ".join(f"{pod}: {why}" for pod, why in behind[: applied.LISTED])
        more = f"; and {len(behind) - applied.LISTED} more" if len(behind) > applied.LISTED else ""
        parts.append(
            f"{len(behind)} of {len(j.pods)} ready PgBouncer pod(s) not on sizing generation "
            f"{j.generation}: {named}{more}"
        )
    elif j.pods:
        parts.append(f"the {len(j.pods)} ready PgBouncer pod(s) run sizing generation "
                     f"{j.generation}")  # fmt: skip
    if j.unconfirmable:
        shown = ", ".join(j.unconfirmable[: applied.LISTED])
        more = f" and {len(j.unconfirmable) - applied.LISTED} more" if (
            len(j.unconfirmable) > applied.LISTED) else ""  # fmt: skip
        parts.append(
            f"PgBouncer pod(s) {shown}{more} not confirmable: no container port named "
            f"{METRICS_PORT} (set {METRICS_VALUE}), so Applied covers the consumer pods only"
        )
    result = dict(consumers)
    if behind:
        result["status"] = "False"
        result["reason"] = "PodsLagging"
    message = "; ".join([consumers.get("message", ""), *parts]) if parts else consumers["message"]
    if behind and consumers.get("status") == "True":
        message = "; ".join(parts)  # only PgBouncer lags: say that first
    result["message"] = message[:1024]
    return result


def pools(reports: list[Report]) -> dict[str, Pool]:
    """SHOW POOLS per alias summed over every pod that answered with PgBouncer up."""
    total: dict[str, Pool] = {}
    for r in reports:
        if r.scrape is None or not r.scrape.up:
            continue
        for alias, pool in r.scrape.pools.items():
            total[alias] = total.get(alias, Pool()).plus(pool)
    return total


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _shown(value: int | None) -> str:
    return "not exported" if value is None else str(value)
