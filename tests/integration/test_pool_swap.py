"""The plan file resizes every worker's pool in place, under load, with no failed request;
a bad plan file keeps the last good plan and logs one clear error."""

from __future__ import annotations

import asyncio
import time

import load
from appserver import App

from poolwarden import planfile


def plan(generation: int, pool_size: int, max_overflow: int = 0) -> planfile.PoolPlan:
    return planfile.PoolPlan(pool_size=pool_size, max_overflow=max_overflow,
                             generation=generation, budget="default/app", consumer="app")


async def resize_under_load(app: App, plans: list[planfile.PoolPlan]
                            ) -> tuple[load.LoadResult, list[float]]:
    """Traffic from 16 clients while each plan is written and applied; returns the load
    result and, per plan, the time every worker reported it."""
    applied: list[float] = []
    stop = asyncio.Event()
    result = load.LoadResult()
    traffic = asyncio.create_task(load.probe_load(app.url, tasks=16, stop=stop, sleep=0.005,
                                                  max_seconds=120, result=result))
    while result.total < 16:  # traffic is flowing before the first change
        await asyncio.sleep(0.05)
    for new_plan in plans:
        app.write_plan(new_plan)
        await asyncio.to_thread(app.wait_for_plan, new_plan.generation)
        applied.append(time.monotonic())
        await asyncio.sleep(0.5)  # keep serving on the new pool for a moment
    stop.set()
    return await traffic, applied


def test_hot_resize_under_load_fails_no_request(start_app, stack):
    app = start_app(workers=2, plan=plan(1, 2))
    assert {p["pool_size"] for p in app.pools().values()} == {2}

    result, applied = asyncio.run(
        resize_under_load(app, [plan(2, 6, 2), plan(3, 1), plan(4, 3, 1)]))

    assert result.failed == 0, result.summary()
    assert result.wrong == 0, result.summary()
    # Traffic ran before the first change (see resize_under_load) and after each swap.
    for applied_at in applied:
        assert any(done > applied_at for done in result.finished), result.summary()
    pools = app.wait_for_plan(4)
    for status in pools.values():
        assert (status["pool_size"], status["max_overflow"]) == (3, 1)
        assert status["swaps"] == 3
    # Old pools were disposed once their requests ended: no retired pool keeps connections.
    deadline = time.monotonic() + 20
    while any(p["retired_pools_open"] for p in app.pools().values()):
        assert time.monotonic() < deadline, app.pools()
        time.sleep(0.2)


def test_same_sizes_new_generation_keeps_the_pool(start_app):
    app = start_app(workers=2, plan=plan(1, 2))
    app.write_plan(plan(2, 2))
    for status in app.wait_for_plan(2).values():
        assert status["swaps"] == 0


def test_bad_plan_keeps_last_good_and_logs_one_error(start_app):
    app = start_app(workers=2, plan=plan(5, 3))
    app.wait_for_plan(5)

    app.write_plan_text("{ this is not json")
    time.sleep(1.5)
    app.write_plan_text("{ this is not json either")  # same problem: no second error
    time.sleep(1.5)
    for status in app.pools().values():
        assert (status["generation"], status["pool_size"]) == (5, 3)
    rejected = [line for line in app.log_text().splitlines() if "rejected" in line]
    assert len(rejected) == app.workers, rejected  # one per worker, not one per event
    assert "keeping plan generation 5" in rejected[0]

    app.write_plan_text('{"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPlan", '
                        '"poolSize": 0, "maxOverflow": 0}\n')
    time.sleep(1.5)
    assert {p["pool_size"] for p in app.pools().values()} == {3}
    assert "'poolSize' must be >= 1" in app.log_text()

    app.plan_file.unlink()
    time.sleep(1.5)
    assert {p["generation"] for p in app.pools().values()} == {5}
    assert "disappeared" in app.log_text()

    app.write_plan(plan(6, 4))  # a good plan again is applied
    assert {p["pool_size"] for p in app.wait_for_plan(6).values()} == {4}
