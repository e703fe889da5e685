"""poolwarden.aio.PlanEngine: the pool swap. Engines are real SQLAlchemy engines that never
connect."""

from __future__ import annotations

from poolwarden import aio, planfile
from poolwarden_fastapi_app import config

SETTINGS = config.Settings(db_host="127.0.0.1", db_port=1, db_password="x")


def plan(size: int, overflow: int = 0, generation: int = 1) -> planfile.PoolPlan:
    return planfile.PoolPlan(pool_size=size, max_overflow=overflow, generation=generation)


def make_pools(initial: planfile.PoolPlan) -> aio.PlanEngine:
    return aio.PlanEngine(aio.engine_factory(SETTINGS.url(), SETTINGS.engine_options()), initial)


async def test_swap_builds_a_new_pool_and_disposes_the_idle_old_one():
    pools = make_pools(plan(2))
    old = pools.current
    assert await pools.apply(plan(4, 1, generation=2)) is True
    assert pools.current is not old
    assert pools.current.engine.pool.size() == 4
    await pools.close()
    assert old.retired and pools.status()["retired_pools_open"] == 0
    assert pools.status()["generation"] == 2 and pools.status()["swaps"] == 1


async def test_old_pool_lives_until_its_last_request_ends():
    pools = make_pools(plan(2))
    async with pools.lease() as leased:
        await pools.apply(plan(3, generation=2))
        assert leased.retired
        assert pools.status()["retired_pools_open"] == 1  # in use: not disposed yet
        async with pools.lease() as fresh:
            assert fresh is pools.current and fresh is not leased
    await pools.close()  # waits for the disposal started when the lease ended
    assert pools.status()["retired_pools_open"] == 0


async def test_same_sizes_only_update_the_generation():
    pools = make_pools(plan(2, 1, generation=1))
    slot = pools.current
    assert await pools.apply(plan(2, 1, generation=7)) is False
    assert pools.current is slot
    assert pools.status()["generation"] == 7 and pools.status()["swaps"] == 0
    await pools.close()
