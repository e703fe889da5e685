"""The Flask service's pools follow the plan file under load (gunicorn gthread, --preload,
through PgBouncer): no failed request, PgBouncer's SHOW CLIENTS down to every new plan, the
last good plan kept through bad files, and no worker above its threads."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import devstack
import load
from appserver import App

from poolwarden import planfile, planner

sys.path.insert(0, str(Path(__file__).parent))


def plan(generation: int, pool_size: int, max_overflow: int = 0) -> planfile.PoolPlan:
    return planfile.PoolPlan(pool_size=pool_size, max_overflow=max_overflow,
                             generation=generation, budget="default/app", consumer="flask")


def app_clients(stack: devstack.Stack, app: App) -> int:
    """PgBouncer client connections of this service's processes (SHOW CLIENTS)."""
    bouncer = devstack.Bouncer(stack=stack, name="pgbouncer", port=stack.bouncer_port)
    return sum(1 for row in bouncer.show("CLIENTS")
               if row.get("application_name", "").startswith(f"{app.name}/"))


async def settle(stack: devstack.Stack, app: App, limit: int, timeout: float = 20
                 ) -> tuple[int, float]:
    started = time.monotonic()
    while True:
        seen = await asyncio.to_thread(app_clients, stack, app)
        if seen <= limit or time.monotonic() - started > timeout:
            return seen, round(time.monotonic() - started, 2)
        await asyncio.sleep(0.2)


async def swap_under_load(stack: devstack.Stack, app: App, plans: list[planfile.PoolPlan]
                          ) -> tuple[load.LoadResult, list[tuple[int, int, float]]]:
    stop = asyncio.Event()
    result = load.LoadResult()
    traffic = asyncio.create_task(load.probe_load(app.url, tasks=16, stop=stop, sleep=0.005,
                                                  max_seconds=180, result=result))
    while result.total < 16:
        await asyncio.sleep(0.05)
    seen = []
    for new in plans:
        app.write_plan(new)
        await asyncio.to_thread(app.wait_for_plan, new.generation)
        served = result.total
        limit = app.workers * (new.pool_size + new.max_overflow)
        got, seconds = await settle(stack, app, limit)  # while the load goes on
        seen.append((limit, got, seconds))
        while result.total < served + 32:  # served on the new pool
            await asyncio.sleep(0.05)
    stop.set()
    return await traffic, seen


def test_flask_swap_under_load_fails_no_request_and_clients_follow_each_plan(start_flask,
                                                                             stack):
    app = start_flask(workers=2, threads=8, plan=plan(1, 2))
    result, seen = asyncio.run(swap_under_load(
        stack, app, [plan(2, 6, 2), plan(3, 1), plan(4, 3, 1), plan(5, 1)]))
    sys.stdout.write(f"flask swaps: {result.summary()}; (limit, SHOW CLIENTS, s): {seen}\n")
    assert result.failed == 0, result.summary()
    assert result.wrong == 0, result.summary()
    assert len(result.pids) == 2, result.summary()
    for limit, got, _ in seen:
        assert got <= limit, seen
    for status in app.wait_for_plan(5).values():
        assert (status["pool_size"], status["swaps"], status["retired_pools_open"]) == (1, 4, 0)


def test_flask_bad_plan_keeps_last_good_and_logs_one_error_per_worker(start_flask):
    app = start_flask(workers=2, threads=2, plan=plan(5, 3))
    app.wait_for_plan(5)
    app.write_plan_text("{ this is not json")
    time.sleep(1.5)
    app.write_plan_text("{ this is not json either")  # the same problem: no second error
    time.sleep(1.5)
    for status in app.pools().values():
        assert (status["generation"], status["pool_size"]) == (5, 3)
    rejected = [line for line in app.log_text().splitlines() if "rejected" in line]
    assert len(rejected) == app.workers, rejected  # one per worker; the master watches nothing
    assert "keeping plan generation 5" in rejected[0]

    app.plan_file.unlink()
    time.sleep(1.5)
    assert {p["generation"] for p in app.pools().values()} == {5}
    assert "disappeared" in app.log_text()
    app.write_plan(plan(6, 4))
    assert {p["pool_size"] for p in app.wait_for_plan(6).values()} == {4}


def test_threads_cap_honoured_by_the_planner_and_by_the_workers(start_flask, stack):
    """A gthread worker with 3 threads: the planner never gives it more than 3 connections,
    however large its share of the budget; and a plan above that (written by hand) still
    opens no more than workers x threads connections under a load of 24 concurrent clients."""
    threads, workers = 3, 2
    result = planner.plan(
        planner.Budget(max_connections=150, reserved=10), planner.PgBouncer(replicas=1),
        [planner.Consumer("fastapi", replicas=1, workers=2),
         planner.Consumer("flask", replicas=1, workers=workers, threads=threads,
                          overflow="half")])
    flask_plan = next(c for c in result.consumers if c.name == "flask")
    assert flask_plan.server_pool > workers * threads  # the budget would allow more ...
    assert flask_plan.cap == threads
    assert flask_plan.pool_size + flask_plan.max_overflow <= threads  # ... the plan does not

    app = start_flask(workers=workers, threads=threads,
                      plan=plan(1, flask_plan.pool_size, flask_plan.max_overflow))
    peaks = []
    for generation, new in ((1, None), (2, plan(2, 10, 5))):  # then a plan above the threads
        if new is not None:
            app.write_plan(new)
            app.wait_for_plan(generation)
        peak = [0]
        stop = threading.Event()

        def sample(peak: list[int] = peak, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], app_clients(stack, app))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        loaded = asyncio.run(load.probe_load(app.url, tasks=24, requests_per_task=6,
                                             sleep=0.2, max_seconds=120))
        stop.set()
        sampler.join()
        assert loaded.failed == 0 and loaded.wrong == 0, loaded.summary()
        peaks.append(peak[0])
    sys.stdout.write(f"threads cap {workers} x {threads}: SHOW CLIENTS peaks {peaks}\n")
    assert all(0 < p <= workers * threads for p in peaks), peaks
