"""Per-consumer pools in the real PgBouncer 1.24: one database alias per consumer from the
sizing include, each with its own pool_size, and max_user_connections capping their sum.

The PgBouncers here log in to PostgreSQL as a role of their own, so pg_stat_activity's count
of that role is exactly what one PgBouncer holds (PostgreSQL's view, sampled every 50 ms);
SHOW SERVERS gives PgBouncer's view per alias. Load loops are bounded in count and time."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import sys
import threading
import time

import asyncpg
import devstack
import httpx
import pytest
from test_pgbouncer import sizing, wait_until
from test_pgbouncer_fallback import pgbouncer_pids

from poolwarden import pgbouncer_ini

ROLE = "aliases"
ROLE_PASSWORD = "aliases-dev-password"


@pytest.fixture(scope="module")
def role(stack: devstack.Stack) -> str:
    """A login role used only by the PgBouncers of this module."""
    stack.psql(
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'; END IF; END$$", db="postgres")
    stack.psql(f"ALTER ROLE {ROLE} SET jit = off", db="postgres")
    return ROLE


@pytest.fixture
def start_aliases_bouncer(start_bouncer, role):
    def start(**env: str) -> devstack.Bouncer:
        return start_bouncer(PGBOUNCER_DB_USER=role, PGBOUNCER_DB_PASSWORD=ROLE_PASSWORD, **env)
    return start


def alias(stack: devstack.Stack, name: str, pool: int) -> pgbouncer_ini.Database:
    return pgbouncer_ini.Database(name=name, host="127.0.0.1", port=stack.pg_port,
                                  dbname=devstack.APP_DB, pool_size=pool)


def served(bouncer: devstack.Bouncer) -> dict[str, int]:
    """Alias -> pool_size as PgBouncer serves it now (SHOW DATABASES, without its own)."""
    return {row["name"]: int(row["pool_size"]) for row in bouncer.show("DATABASES")
            if row["name"] not in ("pgbouncer", devstack.APP_DB)}


def apply(bouncer: devstack.Bouncer, text: str, expected: dict[str, int]) -> None:
    """Write the include and wait until PgBouncer serves exactly `expected`."""
    bouncer.write_sizing(text)
    wait_until(lambda: served(bouncer) == expected, f"PgBouncer to serve {expected}")


@dataclasses.dataclass
class Load:
    """`clients` connections per alias, each running `SELECT pg_sleep(hold)` in a loop."""

    port: int
    clients: dict[str, int]
    hold: float = 0.2
    max_seconds: float = 60.0
    ok: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    connected: int = 0
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = dataclasses.field(default_factory=list)

    async def _client(self, name: str) -> None:
        deadline = time.monotonic() + self.max_seconds
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=ROLE,
                                         password=ROLE_PASSWORD, database=name, timeout=30,
                                         command_timeout=60,
                                         server_settings={"application_name": name})
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self.errors[f"{name}: connect: {type(exc).__name__}: {exc}"] += 1
            return
        self.connected += 1
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    await conn.fetchval("SELECT pg_sleep($1)", self.hold)
                    self.ok[name] += 1
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    self.errors[f"{name}: {type(exc).__name__}: {exc}"] += 1
                    return  # the connection is gone (e.g. its alias was removed)
        finally:
            conn.terminate()

    async def start(self) -> None:
        total = sum(self.clients.values())
        self._tasks = [asyncio.create_task(self._client(name))
                       for name, count in self.clients.items() for _ in range(count)]
        deadline = time.monotonic() + 60
        while self.connected + sum(self.errors.values()) < total:
            assert time.monotonic() < deadline, f"{self.connected} of {total} connected"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


class Sampler:
    """pg_stat_activity (PostgreSQL's view) every 50 ms and SHOW SERVERS (PgBouncer's view,
    one psql per sample) in a thread, for the role of this module."""

    def __init__(self, stack: devstack.Stack, bouncer: devstack.Bouncer) -> None:
        self.stack, self.bouncer = stack, bouncer
        self.activity: list[tuple[float, dict[str, int]]] = []  # application_name -> count
        self.servers: list[tuple[float, dict[str, int]]] = []  # alias -> server connections
        self._stop = asyncio.Event()
        self._thread_stop = threading.Event()
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None

    async def _activity(self) -> None:
        conn = await asyncpg.connect(self.stack.dsn(via_bouncer=False, superuser=True))
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT application_name, count(*) AS n FROM pg_stat_activity "
                    "WHERE usename = $1 GROUP BY 1", ROLE)
                self.activity.append((time.monotonic(), {r["application_name"]: r["n"]
                                                         for r in rows}))
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    def _servers(self) -> None:
        while not self._thread_stop.is_set():
            counts = collections.Counter(row["database"] for row in self.bouncer.show("SERVERS"))
            self.servers.append((time.monotonic(), dict(counts)))
            self._thread_stop.wait(0.2)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._activity())
        self._thread = threading.Thread(target=self._servers, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self._thread_stop.set()
        await self._task
        await asyncio.to_thread(self._thread.join, 30)

    @staticmethod
    def _peak(samples, key, start: float, end: float) -> int:
        return max((key(counts) for t, counts in samples if start <= t <= end), default=0)

    def peaks(self, names: list[str], start: float, end: float = float("inf")) -> dict:
        """Peaks between start and end: per alias in both views, and the role's total."""
        return {
            "pg_stat_activity": {n: self._peak(self.activity, lambda c, n=n: c.get(n, 0),
                                               start, end) for n in names},
            "show_servers": {n: self._peak(self.servers, lambda c, n=n: c.get(n, 0),
                                           start, end) for n in names},
            "total": self._peak(self.activity, lambda c: sum(c.values()), start, end),
            "total_show_servers": self._peak(self.servers, lambda c: sum(c.values()),
                                             start, end),
        }


def record(request: pytest.FixtureRequest, tmp_path, figures: dict) -> None:
    """Keep the measured figures next to the test (and in the -rA report)."""
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
    request.node.user_properties.append(("figures", json.dumps(figures)))
    sys.stdout.write(f"figures: {json.dumps(figures)}\n")


def test_each_alias_gets_its_pool_size_and_max_user_connections_caps_the_sum(
        start_aliases_bouncer, stack, request, tmp_path):
    bouncer = start_aliases_bouncer()
    apply(bouncer, sizing(8, 8, max_user=8, generation=1,
                          databases=(alias(stack, "big", 6), alias(stack, "small-b", 2))),
          {"big": 6, "small-b": 2})

    async def scenario() -> dict:
        sampler = Sampler(stack, bouncer)
        await sampler.start()
        load = Load(bouncer.port, {"big": 24, "small-b": 12}, hold=0.2, max_seconds=60)
        await load.start()
        await asyncio.sleep(1)  # every client queued: now sample the saturated pools
        started = time.monotonic()
        await asyncio.sleep(4)
        ended = time.monotonic()
        await sampler.stop()
        await load.stop()
        return {"peaks": sampler.peaks(["big", "small-b"], started, ended),
                "ok": dict(load.ok), "errors": dict(load.errors)}

    figures = asyncio.run(scenario())
    record(request, tmp_path, figures)
    peaks = figures["peaks"]
    assert not figures["errors"], figures
    assert min(figures["ok"].values()) > 0, figures  # both consumers were served
    assert peaks["show_servers"] == {"big": 6, "small-b": 2}, figures
    assert peaks["pg_stat_activity"] == {"big": 6, "small-b": 2}, figures
    assert peaks["total"] <= 8 and peaks["total_show_servers"] <= 8, figures


def test_one_alias_alone_gets_its_reserve_but_never_more_than_max_user_connections(
        start_aliases_bouncer, stack, request, tmp_path):
    bouncer = start_aliases_bouncer()
    # pool 6 + reserve 4 would be 10; max_user_connections 8 caps the user's total.
    apply(bouncer, sizing(8, 10, max_user=8, reserve=4, generation=1,
                          databases=(alias(stack, "big", 6),)), {"big": 6})

    async def scenario() -> dict:
        sampler = Sampler(stack, bouncer)
        await sampler.start()
        # Clients wait longer than reserve_pool_timeout (5 s): 20 x 2 s on 6 connections.
        load = Load(bouncer.port, {"big": 20}, hold=2.0, max_seconds=60)
        started = time.monotonic()
        await load.start()
        await asyncio.sleep(12)
        await sampler.stop()
        await load.stop()
        return {"peaks": sampler.peaks(["big"], started), "ok": dict(load.ok),
                "errors": dict(load.errors)}

    figures = asyncio.run(scenario())
    record(request, tmp_path, figures)
    peaks = figures["peaks"]
    assert not figures["errors"], figures
    assert peaks["total"] <= 8 and peaks["total_show_servers"] <= 8, figures
    assert peaks["show_servers"]["big"] > 6, figures  # the reserve was used, up to the cap


@pytest.mark.parametrize("reconnect", [True, False], ids=["reconnect", "reload-only"])
def test_reload_adds_resizes_and_removes_aliases_live_and_a_lowered_pool_shrinks(
        reconnect, start_aliases_bouncer, stack, request, tmp_path):
    bouncer = start_aliases_bouncer(PGBOUNCER_RECONNECT_ON_LOWER="1" if reconnect else "0")
    apply(bouncer, sizing(8, 8, max_user=8, generation=1,
                          databases=(alias(stack, "big", 6), alias(stack, "small-b", 2))),
          {"big": 6, "small-b": 2})
    [pid] = pgbouncer_pids(bouncer)

    async def scenario() -> dict:
        sampler = Sampler(stack, bouncer)
        await sampler.start()
        load = Load(bouncer.port, {"big": 24, "small-b": 6}, hold=0.2, max_seconds=60)
        await load.start()
        await asyncio.sleep(2)
        before = sampler.peaks(["big", "small-b"], time.monotonic() - 1.5)
        changed_at = time.monotonic()
        # big lowered 6 -> 3, small-b removed, third added: one RELOAD.
        await asyncio.to_thread(
            apply, bouncer, sizing(8, 8, max_user=8, generation=2,
                                   databases=(alias(stack, "big", 3), alias(stack, "third", 2))),
            {"big": 3, "third": 2})
        served_at = time.monotonic()
        third = await asyncpg.connect(host="127.0.0.1", port=bouncer.port, user=ROLE,
                                      password=ROLE_PASSWORD, database="third")
        third_answer = await third.fetchval("SELECT 40 + 2")
        await third.close()
        await asyncio.sleep(5)
        await sampler.stop()
        await load.stop()
        settled = None  # first sample from which big stays <= 3 (PostgreSQL's view)
        for t, counts in sampler.activity:
            if t < changed_at:
                continue
            if counts.get("big", 0) > 3:
                settled = None
            elif settled is None:
                settled = t
        return {
            "before": before,
            "after_last_3s": sampler.peaks(["big", "small-b", "third"], time.monotonic() - 3),
            "seconds_to_serve": round(served_at - changed_at, 2),
            "seconds_to_limit": None if settled is None else round(settled - changed_at, 2),
            "third_answer": third_answer,
            "ok": dict(load.ok), "errors": dict(load.errors),
        }

    figures = asyncio.run(scenario())
    record(request, tmp_path, figures)
    assert pgbouncer_pids(bouncer) == [pid]  # RELOADed in place, never restarted
    assert figures["before"]["show_servers"] == {"big": 6, "small-b": 2}, figures
    assert figures["third_answer"] == 42  # the added alias serves at once
    after = figures["after_last_3s"]
    assert after["show_servers"]["small-b"] == 0, figures  # removed with its connections
    assert after["pg_stat_activity"]["small-b"] == 0, figures
    # big's clients never failed; only the removed alias's clients lost their connection
    # (PgBouncer closes them on RELOAD: "database removed").
    assert not [e for e in figures["errors"] if e.startswith("big:")], figures
    assert [e for e in figures["errors"] if e.startswith("small-b:")], figures
    log = bouncer.log_text()
    if reconnect:  # the entrypoint's RECONNECT "big": the excess closes as it is released
        assert "alias small-b removed" in log, log
        assert after["show_servers"]["big"] <= 3, figures
        assert after["pg_stat_activity"]["big"] <= 3, figures
        assert figures["seconds_to_limit"] is not None, figures
        assert "alias big pool_size 6 -> 3: RECONNECT done" in log, log
    else:  # RELOAD alone: busy server connections above the new pool_size stay
        assert after["show_servers"]["big"] > 3, figures


def test_a_full_pool_answers_503_with_retry_after_after_query_wait_timeout(
        start_aliases_bouncer, start_app, stack, request, tmp_path):
    wait = 2
    bouncer = start_aliases_bouncer(PGBOUNCER_QUERY_WAIT_TIMEOUT=str(wait))
    apply(bouncer, sizing(1, 1, max_user=1, generation=1, databases=(alias(stack, "web", 1),)),
          {"web": 1})
    app = start_app(workers=1, POOLWARDEN_DB_PORT=str(bouncer.port), POOLWARDEN_DB_NAME="web",
                    POOLWARDEN_DB_USER=ROLE, POOLWARDEN_DB_PASSWORD=ROLE_PASSWORD,
                    POOLWARDEN_CREATE_SCHEMA="false", POOLWARDEN_POOL_SIZE="2")

    async def scenario() -> dict:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
            warm = await client.get("/probe/1", params={"value": 1})
            # One client holds the alias's only server connection.
            holder = await asyncpg.connect(host="127.0.0.1", port=bouncer.port, user=ROLE,
                                           password=ROLE_PASSWORD, database="web")
            hold = asyncio.create_task(holder.fetchval("SELECT pg_sleep(12)"))
            await asyncio.to_thread(wait_until, lambda: any(
                row["database"] == "web" and row["state"] == "active"
                for row in bouncer.show("SERVERS")), "the holder's server connection")
            answers = []
            for _ in range(2):  # twice: a fresh and a reused app connection
                started = time.monotonic()
                response = await client.get("/probe/2", params={"value": 2})
                answers.append({"status": response.status_code,
                                "retry_after": response.headers.get("retry-after"),
                                "seconds": round(time.monotonic() - started, 2),
                                "body": response.text[:200]})
            await hold
            await holder.close()
            after = await client.get("/probe/3", params={"value": 3})  # the pool is free again
        return {"warm": warm.status_code, "answers": answers, "after": after.status_code}

    figures = asyncio.run(scenario())
    record(request, tmp_path, figures)
    assert figures["warm"] == 200 and figures["after"] == 200, figures
    for answer in figures["answers"]:
        assert answer["status"] == 503, figures
        assert answer["retry_after"] is not None and int(answer["retry_after"]) >= 1, figures
        # It queued in PgBouncer for about query_wait_timeout (not a hang, not an instant
        # error). The first request through a pooled connection may wait twice: the app's
        # pre-ping queues too, then its retry on a new connection.
        assert wait * 0.5 <= answer["seconds"] < wait * 3, figures
    # PgBouncer's wait timeout, not the app's own pool timeout, gave the 503.
    assert "pooler error: query_wait_timeout" in bouncer.log_text()
    assert "query_wait_timeout" in app.log_file.read_text()
