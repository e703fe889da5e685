"""How much of the connection budget the app can use: the old planner against the new one.

One PostgreSQL 17 (the budget = maxConnections - reserved), PgBouncer 1.24 replicas behind a
round-robin TCP balancer (bench/tcplb.py, standing in for the PgBouncer Service), and app pods:
each pod is one gunicorn process running the real app
(`poolwarden_fastapi_app.main:create_app()`, uvicorn workers) with the plan file and the
PgBouncer database a planner gives it. Every transaction holds its connection for d seconds
(`/probe/0?sleep=d`), long enough that the request rate stays far below what the machine
serves, so throughput measures usable concurrency:
achieved concurrency = completed transactions/s x d.

Scenarios (the plan is for every pod; the load goes where the scenario says):

    (a) one consumer of 6 pods, load spread over every pod
    (b) the same plan, all load on one pod of six
    (c) two consumers of 3 pods each, weights 3:1, both saturating (achieved share ratio)

Planners: "old" is src/poolwarden/planner.py at commit OLD_REV (loaded from git, so this stays
runnable as main moves on), with that commit's chart defaults (PgBouncer maxSurge 1, no
per-consumer pools: every pod uses PgBouncer's one database); "new" is the working tree's
planner (PgBouncer maxSurge 0, one PgBouncer database alias per consumer, max_user_connections).
Every run counts the app role's backends in pg_stat_activity every 0.1 s: the peak must never
exceed the budget.

Writes bench/out/utilization.md, utilization.json and utilization.png; prints the table.
Bounded: 3 scenarios x 2 planners x (warmup + seconds + start/stop), about 3-4 minutes.

    python bench/utilization.py [--max-connections 44] [--reserved 4] [--bouncers 2]
        [--pods 6] [--seconds 10] [--wait-timeout 10] [--warmup SECONDS] [--sleep 1]
        [--clients N] [--scenarios a,b,c] [--planners old,new]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
import httpx

from poolwarden import pgbouncer_ini, planfile
from poolwarden import planner as new_planner

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "devstack"))
import devstack  # noqa: E402

OUT = REPO / "bench" / "out"
TCPLB = Path(__file__).resolve().parent / "tcplb.py"
OLD_REV = "8c90e5f"
"""The last commit of the planner that capped every worker's pool at the steady-state capacity
(before issue 10): the "old" column."""
HOST = "127.0.0.1"
WAIT_TIMEOUT = 10
"""Default seconds a request may wait for a connection, in the app's pool
(POOLWARDEN_POOL_TIMEOUT) and in PgBouncer (query_wait_timeout): the chart's one value
budget.waitTimeoutSeconds. The warm-up lasts as long, so that the measured error rate is the
steady state's (no request can time out before it has waited that long)."""
SLEEP = 1.0
"""d, seconds each transaction holds its connection. 1 s rather than 0.5 s halves the request
rate a given concurrency needs, so that on a busy 2-core machine one app process still serves
the whole budget's concurrency and the figure measures the pools, not the CPU."""
APP_SURGE = 1
"""The app Deployment's maxSurge in the chart (both planners plan for it)."""
ROLE_SLACK = 4
"""Connections the app role may open beyond the budget (see Bench)."""
OLD_PGBOUNCER_SURGE = 1
NEW_PGBOUNCER_SURGE = 0
"""PgBouncer's rollout surge the chart sets: maxSurge 1 before issue 10, 0 after it."""


# -- scenarios and what a planner makes of them -----------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    consumers: tuple[tuple[str, int, int], ...]
    """(name, pods, weight) of every consumer."""
    loaded: dict[str, tuple[int, ...]] | None = None
    """Per consumer, the indexes of the pods that get load; None: every pod of every consumer."""
    goal: float = 0.0
    """The issue's goal for achieved / budget ((a), (b)), or for the share ratio ((c))."""
    short: str = ""
    """A label for the plot."""

    @property
    def weights(self) -> dict[str, int]:
        return {name: weight for name, _, weight in self.consumers}


def scenarios(pods: int = 6) -> dict[str, Scenario]:
    half = max(1, pods // 2)
    return {
        "a": Scenario("a", f"load spread over all {pods} pods", (("web", pods, 1),), goal=0.9,
                      short=f"(a) spread over {pods} pods"),
        "b": Scenario("b", f"all load on one pod of {pods}", (("web", pods, 1),),
                      loaded={"web": (0,)}, goal=0.8, short=f"(b) on 1 pod of {pods}"),
        "c": Scenario("c", f"two consumers ({half} pods each), weights 3:1, both saturating",
                      (("web", half, 3), ("batch", half, 1)), goal=3.0,
                      short="(c) 2 consumers 3:1"),
    }


@dataclasses.dataclass(frozen=True)
class Pod:
    name: str
    consumer: str
    database: str
    """The PgBouncer database the pod connects to (POOLWARDEN_DB_NAME)."""
    pool_size: int
    max_overflow: int
    workers: int = 1


@dataclasses.dataclass(frozen=True)
class Layout:
    """What one planner gives one scenario: every PgBouncer's sizing include and every pod."""

    planner: str
    include: str
    pods: tuple[Pod, ...]
    server: str
    """PgBouncer's server side per replica, for the table."""
    explanation: str


def load_module_at(rev: str, path: str, name: str) -> types.ModuleType:
    """A module of this repository as it was at commit `rev` (`git show`), importable by `name`."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise SystemExit(f"bench: cannot read {path} at commit {rev} from git ({detail}); "
                         "the old planner comes from the repository's history: run from a "
                         "clone") from exc
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102
    return module


def pod_name(consumer: str, index: int) -> str:
    return f"{consumer}-{index}"


def old_layout(scenario: Scenario, *, max_connections: int, reserved: int,
               bouncers: int) -> Layout:
    """The planner at OLD_REV: a pool per worker capped by the steady-state capacity; every pod
    uses PgBouncer's one database (devstack.APP_DB), sized by the include's global limits."""
    old = load_module_at(OLD_REV, "src/poolwarden/planner.py", f"poolwarden_planner_{OLD_REV}")
    consumers = [old.Consumer(name=name, replicas=pods, workers=1, weight=weight,
                              surge=APP_SURGE)
                 for name, pods, weight in scenario.consumers]
    result = old.plan(old.Budget(max_connections, reserved),
                      old.PgBouncer(replicas=bouncers, surge=OLD_PGBOUNCER_SURGE), consumers)
    b = result.pgbouncer
    # Written in today's include format (the PgBouncer entrypoint checks for it), with the old
    # limits and no aliases: with one database max_user_connections = max_db_connections
    # changes nothing.
    include = pgbouncer_ini.render(pgbouncer_ini.Sizing(
        default_pool_size=b.default_pool_size, max_db_connections=b.max_db_connections,
        reserve_pool_size=b.reserve_pool_size, max_client_conn=b.max_client_conn,
        max_user_connections=b.max_db_connections),
        budget=f"bench/{scenario.key}-old", generation=1)
    pods = tuple(Pod(pod_name(c.name, i), c.name, devstack.APP_DB, c.pool_size, c.max_overflow)
                 for c in result.consumers for i in range(c.replicas))
    server = (f"one pool {b.default_pool_size} (+{b.reserve_pool_size} reserve), "
              f"max_db_connections {b.max_db_connections}")
    return Layout("old", include, pods, server, result.explanation)


def new_layout(scenario: Scenario, *, max_connections: int, reserved: int, bouncers: int,
               pg_port: int) -> Layout:
    """The working tree's planner: one PgBouncer database alias per consumer (its weighted
    server pool), max_user_connections = the replica's slice, app pools as large as a worker
    can use."""
    if not hasattr(new_planner, "ASYNC_WORKER_CAP"):
        raise SystemExit("bench: this tree's planner has no per-consumer PgBouncer pools yet "
                         "(planner.ASYNC_WORKER_CAP); run with --planners old")
    consumers = [new_planner.Consumer(name=name, replicas=pods, workers=1, weight=weight,
                                      surge=APP_SURGE)
                 for name, pods, weight in scenario.consumers]
    result = new_planner.plan(
        new_planner.Budget(max_connections, reserved),
        new_planner.PgBouncer(replicas=bouncers, surge=NEW_PGBOUNCER_SURGE), consumers)
    b = result.pgbouncer
    databases = tuple(pgbouncer_ini.Database(name=c.name, host=HOST, port=pg_port,
                                             dbname=devstack.APP_DB, pool_size=c.server_pool)
                      for c in result.consumers)
    include = pgbouncer_ini.render(pgbouncer_ini.Sizing(
        default_pool_size=b.default_pool_size, max_db_connections=b.max_db_connections,
        reserve_pool_size=b.reserve_pool_size, max_client_conn=b.max_client_conn,
        max_user_connections=b.max_user_connections, databases=databases),
        budget=f"bench/{scenario.key}-new", generation=1)
    pods = tuple(Pod(pod_name(c.name, i), c.name, c.name, c.pool_size, c.max_overflow)
                 for c in result.consumers for i in range(c.replicas))
    aliases = ", ".join(f"{c.name} {c.server_pool}" for c in result.consumers)
    server = (f"aliases {aliases} (+{b.reserve_pool_size} reserve), "
              f"max_user_connections {b.max_user_connections}")
    return Layout("new", include, pods, server, result.explanation)


# -- the load and what it achieved ------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """One run: completed transactions per consumer inside the window, errors, pg peak."""

    seconds: float
    sleep: float
    ok: dict[str, int]
    errors: dict[str, int]
    statuses: dict[str, int]
    pg_peak: int
    pg_samples: list[tuple[float, int]]
    latencies: list[float] = dataclasses.field(default_factory=list)
    """Seconds from request to answer of the successful requests inside the window."""
    pod_cpu: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    """Per loaded pod (gunicorn master + workers), during the window: (CPU cores used, cores'
    worth of time it was runnable but waiting for a CPU)."""
    load_average: float = 0.0
    """The machine's 1-minute load average at the end of the window."""

    def latency(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def achieved(self, consumer: str | None = None) -> float:
        """Concurrent transactions achieved: completed/s x d (one consumer, or all)."""
        done = sum(self.ok.values()) if consumer is None else self.ok.get(consumer, 0)
        return done / self.seconds * self.sleep

    @property
    def error_fraction(self) -> float:
        total = sum(self.ok.values()) + sum(self.errors.values())
        return sum(self.errors.values()) / total if total else 0.0

    def share_ratio(self, first: str, second: str) -> float:
        other = self.achieved(second)
        return self.achieved(first) / other if other else float("inf")


async def drive(targets: Sequence[tuple[str, str]], *, clients: int, warmup: float,
                seconds: float, sleep: float, pg_dsn: str, role: str,
                client_timeout: float = 30.0,
                cpu: Callable[[], dict[str, tuple[float, float]]] | None = None) -> Outcome:
    """`clients` loops, client i bound to targets[i % len] = (consumer, base URL), each looping
    GET /probe/0?sleep=d for warmup + seconds; in-flight requests are cancelled at the end.
    Counts what completes inside the window; samples pg_stat_activity every 0.1 s throughout;
    `cpu()` (per pod: CPU seconds so far, seconds waiting for a CPU) is read at the window's
    start and end."""
    ok: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    window_start, window_end = started + warmup, started + warmup + seconds
    per_url = collections.Counter(targets[i % len(targets)][1] for i in range(clients))
    http = {url: httpx.AsyncClient(base_url=url, timeout=client_timeout,
                                   limits=httpx.Limits(max_connections=n,
                                                       max_keepalive_connections=n))
            for url, n in per_url.items()}
    samples: list[tuple[float, int]] = []
    latencies: list[float] = []
    count_sql = ("SELECT count(*) FROM pg_stat_activity WHERE usename = $1 "
                 "AND backend_type = 'client backend'")
    pg = await asyncpg.connect(pg_dsn)
    cpu_used: dict[str, tuple[float, float]] = {}

    async def sample() -> None:
        cpu_start: dict[str, tuple[float, float]] | None = None
        while (now := time.monotonic()) < window_end:
            if cpu is not None and cpu_start is None and now >= window_start:
                cpu_start = cpu()
            samples.append((now - started, await pg.fetchval(count_sql, role)))
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
        if cpu is not None and cpu_start is not None:
            cpu_end = cpu()
            for name, (ran, waited) in cpu_start.items():
                ran_end, waited_end = cpu_end.get(name, (ran, waited))
                cpu_used[name] = ((ran_end - ran) / seconds, (waited_end - waited) / seconds)

    async def loop(index: int) -> None:
        consumer, url = targets[index % len(targets)]
        client = http[url]
        while (sent := time.monotonic()) < window_end:
            try:
                response = await client.get("/probe/0", params={"sleep": sleep})
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            now = time.monotonic()
            if window_start <= now <= window_end:
                statuses[status] += 1
                if status == "200":
                    ok[consumer] += 1
                    latencies.append(now - sent)
                else:
                    errors[consumer] += 1
            if status != "200":
                await asyncio.sleep(0.1)  # a failing client backs off instead of spinning

    try:
        sampler = asyncio.create_task(sample())
        loops = [asyncio.create_task(loop(i)) for i in range(clients)]
        await sampler
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    finally:
        await pg.close()
        for client in http.values():
            await client.aclose()
    return Outcome(seconds=seconds, sleep=sleep, ok=dict(ok), errors=dict(errors),
                   statuses=dict(statuses), pg_peak=max((n for _, n in samples), default=0),
                   pg_samples=samples, latencies=latencies, pod_cpu=cpu_used,
                   load_average=os.getloadavg()[0])


# -- the stack --------------------------------------------------------------------------------

class Bench:
    """One PostgreSQL whose app role's CONNECTION LIMIT is the budget + `role_slack`; per run,
    fresh PgBouncer replicas, a balancer in front of them and fresh app pods, all stopped after
    the run. With slack, PostgreSQL would let a plan that overshoots the budget show it in
    pg_stat_activity (instead of refusing the connection), so the peak measures the plan."""

    def __init__(self, state: Path, *, max_connections: int, reserved: int, bouncers: int,
                 role_slack: int = ROLE_SLACK, wait_timeout: int = WAIT_TIMEOUT) -> None:
        self.wait_timeout = wait_timeout
        self.max_connections = max_connections
        self.reserved = reserved
        self.bouncers = bouncers
        self.role_slack = role_slack
        self.stack = devstack.Stack(state=state, pg_port=devstack.free_port(),
                                    bouncer_port=devstack.free_port(),
                                    app_port=devstack.free_port())
        self.runs = 0

    @property
    def budget(self) -> int:
        return self.max_connections - self.reserved

    def start(self) -> None:
        self.stack.start_postgres(max_connections=self.max_connections + self.role_slack,
                                  reserved=self.reserved)

    def stop(self) -> None:
        devstack.stop(self.stack)

    @property
    def pg_dsn(self) -> str:
        return self.stack.dsn(via_bouncer=False, superuser=True)

    def layout(self, planner: str, scenario: Scenario) -> Layout:
        sizes = {"max_connections": self.max_connections, "reserved": self.reserved,
                 "bouncers": self.bouncers}
        if planner == "old":
            return old_layout(scenario, **sizes)
        return new_layout(scenario, pg_port=self.stack.pg_port, **sizes)

    def run(self, layout: Layout, scenario: Scenario, *, clients: int, warmup: float,
            seconds: float, sleep: float) -> Outcome:
        self.runs += 1
        tag = f"r{self.runs}"
        names: list[str] = []
        try:
            lb_port = self._start_pgbouncers(tag, layout.include, names)
            urls = self._start_pods(tag, layout.pods, lb_port, names)
            targets = self._targets(scenario, layout.pods, urls)
            devstack.log(f"({scenario.key}) {layout.planner} planner: {clients} clients on "
                         f"{len({u for _, u in targets})} pod(s), {warmup:.0f}+{seconds:.0f} s")
            loaded = {pod: self.stack.pids[f"app-{tag}-{pod}"]
                      for pod, url in urls.items() if url in {u for _, u in targets}}
            return asyncio.run(drive(targets, clients=clients, warmup=warmup, seconds=seconds,
                                     sleep=sleep, pg_dsn=self.pg_dsn, role=devstack.APP_USER,
                                     cpu=lambda: cpu_seconds(loaded)))
        finally:
            self._stop(names)
            self._wait_for_no_backends()

    def _start_pgbouncers(self, tag: str, include: str, names: list[str]) -> int:
        ports = []
        bouncers = []
        for i in range(self.bouncers):
            port = devstack.free_port()
            bouncer = devstack.Bouncer(stack=self.stack, name=f"pgbouncer-{tag}-{i}", port=port)
            bouncer.write_sizing(include)  # the operator's file, there before PgBouncer starts
            bouncers.append(bouncer)
            ports.append(port)

        def start(bouncer: devstack.Bouncer) -> None:
            self.stack.start_pgbouncer(name=bouncer.name, port=bouncer.port,
                                       PGBOUNCER_QUERY_WAIT_TIMEOUT=str(self.wait_timeout))
            names.append(bouncer.name)

        parallel(start, bouncers)
        for bouncer in bouncers:
            applied = bouncer.admin("SHOW CONFIG")
            if not any(row[:1] == ["max_db_connections"] for row in applied):
                raise RuntimeError(f"{bouncer.name}: no sizing applied")
        lb_port = devstack.free_port()
        name = f"lb-{tag}"
        proc = self.stack._spawn(name, [sys.executable, str(TCPLB), str(lb_port), *map(str, ports)])
        names.append(name)
        devstack.wait_for(lambda: devstack.port_open(lb_port), "balancer", proc=proc,
                          log_path=self.stack.log_file(name))
        return lb_port

    def _start_pods(self, tag: str, pods: Sequence[Pod], lb_port: int,
                    names: list[str]) -> dict[str, str]:
        urls: dict[str, str] = {}

        def start(pod: Pod) -> None:
            port = devstack.free_port()
            name = f"app-{tag}-{pod.name}"
            plan_file = self.stack.state / name / "plan.json"
            plan_file.parent.mkdir(parents=True, exist_ok=True)
            plan_file.write_text(planfile.render(planfile.PoolPlan(
                pool_size=pod.pool_size, max_overflow=pod.max_overflow, generation=1,
                budget="bench/utilization", consumer=pod.consumer)))
            names.append(name)
            self.stack.start_app(
                workers=pod.workers, port=port, name=name, POOLWARDEN_INSTANCE=pod.name,
                POOLWARDEN_DB_PORT=str(lb_port), POOLWARDEN_DB_NAME=pod.database,
                POOLWARDEN_PLAN_FILE=str(plan_file), POOLWARDEN_POOL_TIMEOUT=str(self.wait_timeout),
                POOLWARDEN_SLOW_QUERY_SECONDS="0", POOLWARDEN_GRACEFUL_TIMEOUT="1",
                POOLWARDEN_LOG_LEVEL="warning")
            urls[pod.name] = f"http://{HOST}:{port}"

        parallel(start, pods)
        return urls

    @staticmethod
    def _targets(scenario: Scenario, pods: Sequence[Pod],
                 urls: dict[str, str]) -> list[tuple[str, str]]:
        """(consumer, URL) of every loaded pod, interleaved over the consumers so that client
        i % len lands on each consumer equally often."""
        per_consumer: dict[str, list[tuple[str, str]]] = {}
        for name, count, _ in scenario.consumers:
            loaded = (scenario.loaded or {}).get(name, tuple(range(count)))
            per_consumer[name] = [(name, urls[pod_name(name, i)]) for i in loaded]
        rows = [per_consumer[name] for name, _, _ in scenario.consumers]
        if len({len(row) for row in rows}) != 1:
            raise ValueError("every consumer of a scenario must have as many loaded pods")
        return [pair for column in zip(*rows, strict=True) for pair in column]

    def _stop(self, names: list[str]) -> None:
        apps = [n for n in names if n.startswith(("app-", "lb-"))]
        parallel(self.stack.stop_one, apps)
        parallel(self.stack.stop_one, [n for n in names if n not in apps])

    def _wait_for_no_backends(self, timeout: float = 10.0) -> None:
        sql = (f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{devstack.APP_USER}' "
               "AND backend_type = 'client backend'")
        devstack.wait_for(lambda: self.stack.psql(sql).strip() == "0",
                          "app backends gone after a run", timeout=timeout)


def cpu_seconds(roots: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per named process and its live children (a gunicorn master and its workers), every
    thread summed, from /proc/PID/task/TID/schedstat: (seconds on a CPU, seconds runnable but
    waiting for one). The second says whether the machine starved the process of CPU."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    totals = {}
    for name, root in roots.items():
        ran = waited = 0
        for pid in [root, *(pid for pid, ppid in parent.items() if ppid == root)]:
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    on_cpu, on_queue, _ = (task / "schedstat").read_text().split()
                except (OSError, ValueError):
                    continue
                ran += int(on_cpu)
                waited += int(on_queue)
        totals[name] = (ran / 1e9, waited / 1e9)
    return totals


def parallel(fn: Callable, items: Sequence) -> None:
    """fn(item) for every item at once (threads); the first error is raised."""
    if not items:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


# -- report -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    scenario: Scenario
    layout: Layout
    outcome: Outcome
    budget: int

    @property
    def utilization(self) -> float:
        return self.outcome.achieved() / self.budget

    @property
    def ratio(self) -> float | None:
        names = [name for name, _, _ in self.scenario.consumers]
        return self.outcome.share_ratio(*names) if len(names) == 2 else None

    @property
    def met(self) -> bool:
        if self.ratio is not None:
            return abs(self.ratio - self.scenario.goal) <= 0.1 * self.scenario.goal
        return self.utilization >= self.scenario.goal

    def pools(self) -> str:
        seen: dict[str, str] = {}
        for pod in self.layout.pods:
            seen.setdefault(pod.consumer, f"{pod.consumer} {pod.pool_size}+{pod.max_overflow}")
        return ", ".join(seen.values())

    def to_dict(self) -> dict:
        o = self.outcome
        return {
            "scenario": self.scenario.key, "title": self.scenario.title,
            "planner": self.layout.planner, "budget": self.budget,
            "pools_per_worker": self.pools(), "pgbouncer": self.layout.server,
            "achieved": round(o.achieved(), 2),
            "achieved_per_consumer": {c: round(o.achieved(c), 2) for c in self.scenario.weights},
            "utilization": round(self.utilization, 3),
            "share_ratio": None if self.ratio is None else round(self.ratio, 3),
            "goal": self.scenario.goal, "met": self.met,
            "ok": o.ok, "errors": o.errors, "statuses": o.statuses,
            "error_fraction": round(o.error_fraction, 4), "pg_peak": o.pg_peak,
            "latency_p50_s": round(o.latency(0.5), 3), "latency_p99_s": round(o.latency(0.99), 3),
            "pod_cpu_cores": {pod: round(v[0], 2) for pod, v in o.pod_cpu.items()},
            "pod_cpu_wait_cores": {pod: round(v[1], 2) for pod, v in o.pod_cpu.items()},
            "load_average": round(o.load_average, 1),
            "explanation": self.layout.explanation,
        }


def markdown(rows: Sequence[Row], args: argparse.Namespace, load: tuple[float, float]) -> str:
    budget = rows[0].budget if rows else 0
    lines = [
        f"Budget {budget} = maxConnections {args.max_connections} - reserved {args.reserved} "
        f"(the app role's CONNECTION LIMIT is budget + {ROLE_SLACK}, so that only the plan keeps "
        f"the pg peak within the budget); {args.bouncers} PgBouncer replica(s) behind a "
        f"round-robin balancer; pods = gunicorn processes, 1 uvicorn worker each; "
        f"{args.clients} HTTP clients looping `/probe/0?sleep={args.sleep}`; "
        f"requests wait at most {args.wait_timeout} s for a connection (app pool_timeout, "
        f"PgBouncer query_wait_timeout); {args.warmup:.0f} s warm-up, then "
        f"{args.seconds:.0f} s measured. "
        f"Achieved = completed transactions/s x {args.sleep} s. Pools per worker are "
        "pool_size+max_overflow. Load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end, {os.cpu_count()} CPUs.",
        "",
        "| scenario | planner | pool per worker | PgBouncer per replica | achieved | "
        "achieved / budget | goal | errors | p50 / p99 s | pg peak / budget | "
        "busiest pod's CPU: used / waited for, load avg |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        o = row.outcome
        busiest = max(o.pod_cpu.values(), default=(0.0, 0.0))
        achieved = f"{o.achieved():.1f}"
        result = f"{row.utilization:.2f}"
        goal = f">= {row.scenario.goal:.1f}"
        if row.ratio is not None:
            parts = " + ".join(f"{c} {o.achieved(c):.1f}" for c in row.scenario.weights)
            achieved = f"{o.achieved():.1f} ({parts})"
            result = f"{row.utilization:.2f}; ratio {row.ratio:.2f}"
            goal = f"ratio {row.scenario.goal:.0f} ± 10 %"
        lines.append(
            f"| ({row.scenario.key}) {row.scenario.title} | {row.layout.planner} | "
            f"{row.pools()} | {row.layout.server} | {achieved} | {result} | "
            f"{goal} {'met' if row.met else 'not met'} | {100 * o.error_fraction:.1f} % | "
            f"{o.latency(0.5):.1f} / {o.latency(0.99):.1f} | {o.pg_peak} / {row.budget} | "
            f"{busiest[0]:.2f} / {busiest[1]:.2f} cores, {o.load_average:.0f} |")
    notes = [cpu_note(row) for row in rows if not row.met and row.layout.planner == "new"]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def cpu_note(row: Row) -> str:
    """Whether the machine starved the loaded pods of CPU in a run that fell short: time a pod
    was runnable but waiting for a CPU, against the time it ran."""
    o = row.outcome
    ran = sum(r for r, _ in o.pod_cpu.values())
    waited = sum(w for _, w in o.pod_cpu.values())
    if not ran:
        return f"({row.scenario.key}) new: goal not met; no CPU figures for its pods."
    verdict = ("the machine's CPU, not the pools, limited this run" if waited >= ran
               else "CPU starvation does not explain the shortfall")
    return (f"({row.scenario.key}) new: the loaded pod(s) ran {ran:.2f} cores' worth and "
            f"waited, runnable, for another {waited:.2f} (load average "
            f"{o.load_average:.0f} on {os.cpu_count()} CPUs): {verdict} (pg peak "
            f"{o.pg_peak} of {row.budget}).")


def plot(rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    keys = sorted({row.scenario.key for row in rows})
    planners = [p for p in ("old", "new") if any(r.layout.planner == p for r in rows)]
    colors = {"old": "#c44e52", "new": "#4c72b0"}
    fig, (ax1, ax2) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(planners))
    for j, planner in enumerate(planners):
        xs, ys = [], []
        for i, key in enumerate(keys):
            for row in rows:
                if row.scenario.key == key and row.layout.planner == planner:
                    xs.append(i + (j - (len(planners) - 1) / 2) * width)
                    ys.append(row.utilization)
        ax1.bar(xs, ys, width=width, label=f"{planner} planner", color=colors[planner])
        for x, y in zip(xs, ys, strict=True):
            ax1.text(x, y + 0.01, f"{y:.2f}", ha="center", fontsize=8)
    by_key = {row.scenario.key: row.scenario for row in rows}
    ax1.set_xticks(range(len(keys)), [by_key[k].short or by_key[k].key for k in keys],
                   fontsize=8)
    ax1.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax1.set_ylim(0, 1.15)
    ax1.set_title("achieved concurrent transactions / budget")
    ax1.legend(fontsize=8)
    for row in rows:
        ts = [t for t, _ in row.outcome.pg_samples]
        ns = [n for _, n in row.outcome.pg_samples]
        ax2.plot(ts, ns, color=colors[row.layout.planner], linewidth=0.8,
                 linestyle="-" if row.scenario.key == "a" else
                 "--" if row.scenario.key == "b" else ":",
                 label=f"({row.scenario.key}) {row.layout.planner}")
    if rows:
        ax2.axhline(rows[0].budget, color="black", linewidth=1, label="budget")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("seconds into the run")
    ax2.set_title("app role's backends in pg_stat_activity (0.1 s samples)")
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle("poolwarden: how much of the connection budget the app can use")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-connections", type=int, default=44)
    parser.add_argument("--reserved", type=int, default=4)
    parser.add_argument("--bouncers", type=int, default=2)
    parser.add_argument("--pods", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--wait-timeout", type=int, default=WAIT_TIMEOUT,
                        help="seconds a request may wait for a connection (app pool, PgBouncer)")
    parser.add_argument("--warmup", type=float, default=0.0, help="default: --wait-timeout")
    parser.add_argument("--sleep", type=float, default=SLEEP, help="d: seconds per transaction")
    parser.add_argument("--clients", type=int, default=0, help="default: 2 x budget")
    parser.add_argument("--scenarios", default="a,b,c")
    parser.add_argument("--planners", default="old,new")
    args = parser.parse_args(argv)
    budget = args.max_connections - args.reserved
    args.clients = args.clients or 2 * budget
    args.warmup = args.warmup or args.wait_timeout
    chosen = scenarios(args.pods)
    wanted = [chosen[k] for k in args.scenarios.split(",")]
    planners = args.planners.split(",")
    if unknown := sorted(set(planners) - {"old", "new"}):
        parser.error(f"--planners: unknown {unknown}; choose from old, new")

    OUT.mkdir(parents=True, exist_ok=True)
    state_root = REPO / ".state"
    state_root.mkdir(exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="bench-utilization-", dir=state_root))
    bench = Bench(state, max_connections=args.max_connections, reserved=args.reserved,
                  bouncers=args.bouncers, wait_timeout=args.wait_timeout)
    load_start = os.getloadavg()[0]
    rows: list[Row] = []
    try:
        layouts = {(s.key, p): bench.layout(p, s) for s in wanted for p in planners}
        bench.start()
        for scenario in wanted:
            for planner in planners:
                outcome = bench.run(layouts[scenario.key, planner], scenario,
                                    clients=args.clients, warmup=args.warmup,
                                    seconds=args.seconds, sleep=args.sleep)
                rows.append(Row(scenario, layouts[scenario.key, planner], outcome, budget))
    finally:
        bench.stop()
        shutil.rmtree(state, ignore_errors=True)  # the bench's own throwaway cluster

    text = markdown(rows, args, (load_start, os.getloadavg()[0]))
    (OUT / "utilization.md").write_text(text)
    (OUT / "utilization.json").write_text(
        json.dumps([row.to_dict() for row in rows], indent=2) + "\n")
    plot(rows, OUT / "utilization.png")
    sys.stdout.write(text)
    sys.stdout.write(f"\n>> bench: wrote {OUT}/utilization.md, utilization.json, "
                     "utilization.png\n")
    over = [row for row in rows if row.outcome.pg_peak > row.budget]
    if over:
        sys.stdout.write(f">> bench: pg_stat_activity above the budget in {len(over)} run(s)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
