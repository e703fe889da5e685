"""A shrinking pool swap under load really closes the old pool's connections.

Counted where they are real, never from the app's own counters: the app's client connections
in PgBouncer's `SHOW CLIENTS` (through PgBouncer) and its backends in `pg_stat_activity`
(straight to PostgreSQL), by the app's application_name (`<instance>/<pid>`). After every
shrinking swap, under traffic that keeps every connection of the old pool busy, the count
must come down to what the new plan allows: workers x (pool_size + max_overflow).

The control replays the defect: a swap that disposes the old engine while requests still hold
its connections (naive/naive_swap_app.py). The connections those requests give back go into
the orphaned pool and stay open; the same count stays above the plan.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import devstack
import load
import pytest
from appserver import App
from sqlalchemy import text

from poolwarden import aio, planfile
from poolwarden_fastapi_app import config

HERE = Path(__file__).parent
WORKERS = 2
# pool_size, max_overflow: 6 -> 3 (+1) -> 1, each a shrink.
START = (6, 0)
SHRINKS = [(3, 1), (1, 0)]
TASKS = 24  # requests in flight: twice what the first pools hold
# Queued behind a pool of 1, a request waits longer than the default 2 s: this test is about
# connections, not about 503 on exhaustion (test_pool_exhaustion.py).
POOL_TIMEOUT = "20"


def plan(generation: int, pool_size: int, max_overflow: int = 0) -> planfile.PoolPlan:
    return planfile.PoolPlan(pool_size=pool_size, max_overflow=max_overflow,
                             generation=generation, budget="default/app", consumer="app")


def app_connections(stack: devstack.Stack, app: App, *, via_bouncer: bool) -> int:
    """The app's open connections now: PgBouncer clients, or PostgreSQL backends."""
    prefix = f"{app.name}/"
    if via_bouncer:
        bouncer = devstack.Bouncer(stack=stack, name="pgbouncer", port=stack.bouncer_port)
        return sum(1 for client in bouncer.show("CLIENTS")
                   if client.get("application_name", "").startswith(prefix))
    out = stack.psql("SELECT count(*) FROM pg_stat_activity "
                     f"WHERE application_name LIKE '{prefix}%'")
    return int(out.strip())


async def wait_count(stack: devstack.Stack, app: App, *, via_bouncer: bool, done, what: str,
                     timeout: float) -> list[int]:
    """Sample the count until `done(count)` or the deadline; returns every sample."""
    samples: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        count = await asyncio.to_thread(app_connections, stack, app, via_bouncer=via_bouncer)
        samples.append(count)
        if done(count) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.25)


async def shrink_under_load(stack: devstack.Stack, app: App, *, via_bouncer: bool
                            ) -> tuple[load.LoadResult, int, list[tuple[int, list[int]]]]:
    """Traffic that keeps more requests in flight per worker than the first pool has
    connections; each shrink is written while it runs. Returns the load result, the peak count
    before the first shrink, and per shrink (its limit, the samples after it)."""
    stop = asyncio.Event()
    result = load.LoadResult()
    traffic = asyncio.create_task(load.probe_load(app.url, tasks=TASKS, stop=stop, sleep=0.1,
                                                  max_seconds=180, result=result,
                                                  spread=True))
    try:
        start_limit = WORKERS * sum(START)
        before = await wait_count(stack, app, via_bouncer=via_bouncer,
                                  done=lambda n: n >= start_limit, what="the first pool busy",
                                  timeout=30)
        after: list[tuple[int, list[int]]] = []
        for generation, (size, overflow) in enumerate(SHRINKS, start=2):
            app.write_plan(plan(generation, size, overflow))
            await asyncio.to_thread(app.wait_for_plan, generation)
            limit = WORKERS * (size + overflow)
            samples = await wait_count(stack, app, via_bouncer=via_bouncer,
                                       done=lambda n, limit=limit: n <= limit,
                                       what=f"down to {limit}", timeout=20)
            after.append((limit, samples))
    finally:
        stop.set()
        result = await traffic
    return result, max(before), after


@pytest.mark.parametrize("via_bouncer", [True, False], ids=["show-clients", "pg-stat-activity"])
def test_shrinking_swap_closes_the_old_pools_connections(start_app, stack, via_bouncer):
    app = start_app(workers=WORKERS, via_bouncer=via_bouncer, plan=plan(1, *START),
                    POOLWARDEN_POOL_TIMEOUT=POOL_TIMEOUT)

    result, peak, after = asyncio.run(shrink_under_load(stack, app, via_bouncer=via_bouncer))

    print(f"\n{'SHOW CLIENTS' if via_bouncer else 'pg_stat_activity'}: {peak} before; "  # noqa: T201
          + "; ".join(f"limit {limit}: samples {samples}" for limit, samples in after))
    assert result.failed == 0 and result.wrong == 0, result.summary()
    first_limit = after[0][0]
    assert peak > first_limit, f"the first pool was never busier than the first shrink ({peak})"
    for limit, samples in after:
        assert samples[-1] <= limit, (
            f"after shrinking to {limit} connections the app still holds {samples[-1]} "
            f"(samples {samples})")
    # Idle again, nothing comes back: the last plan's pools are all that is open.
    assert app_connections(stack, app, via_bouncer=via_bouncer) <= after[-1][0]


def test_replay_disposing_a_pool_in_use_leaves_its_connections_open(start_app, stack):
    """The control: the naive swap disposes the old engine while requests hold it; the
    connections they return stay open in the orphaned pool, above the new plan."""
    app = start_app(workers=WORKERS, plan=plan(1, *START), wsgi="naive_swap_app:create_app()",
                    chdir=HERE / "naive", POOLWARDEN_POOL_TIMEOUT=POOL_TIMEOUT)

    result, peak, after = asyncio.run(shrink_under_load(stack, app, via_bouncer=True))

    print(f"\nnaive swap, SHOW CLIENTS: {peak} before; "  # noqa: T201
          + "; ".join(f"limit {limit}: samples {samples}" for limit, samples in after))
    assert result.failed == 0, result.summary()
    limit, samples = after[-1]
    assert samples[-1] > limit, f"the naive swap closed its connections: {samples}"


async def test_a_connection_given_back_to_a_retired_pool_is_closed(stack):
    """A connection held outside a lease (a background task, the schema creation) when its
    pool is swapped out is closed when it comes back, not kept in the orphaned pool."""
    name = "orphan-check"
    settings = config.Settings(db_host="127.0.0.1", db_port=stack.pg_port, db_name=devstack.APP_DB,
                               db_user=devstack.APP_USER, db_password=stack.app_password,
                               instance=name, create_schema=False)
    pools = aio.PlanEngine(aio.engine_factory(settings.url(), settings.engine_options()),
                           plan(1, 3))
    held_outside_a_lease = pools.current.engine
    try:
        async with held_outside_a_lease.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await pools.apply(plan(2, 1))  # no lease on the old pool: disposed at once
            await asyncio.sleep(0.5)
        counts = []
        for _ in range(20):  # the connection was given back; give its close a moment
            counts.append(int(await asyncio.to_thread(
                stack.psql, "SELECT count(*) FROM pg_stat_activity "
                f"WHERE application_name LIKE '{name}/%'")))
            if counts[-1] == 0:
                break
            await asyncio.sleep(0.25)
        assert counts[-1] == 0, f"the retired pool kept its connection open: {counts}"
    finally:
        await pools.close()
