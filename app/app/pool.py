"""This worker's pool and its live replacement (the pool swap).

`Pools` holds the current engine. Every request leases it for the request's lifetime. A new
plan builds a new engine and makes it current at once: new requests use it, requests in
flight finish on the old one, and the old engine is disposed (its connections closed) as soon
as its last lease ends. No request fails and no connection is dropped mid-transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from poolwarden import planfile, poolstatus

log = logging.getLogger("app.pool")


@dataclasses.dataclass(eq=False)
class Slot:
    """One engine built for one plan, and how many requests are using it."""

    engine: AsyncEngine
    plan: planfile.PoolPlan
    sessionmaker: async_sessionmaker[AsyncSession]
    leases: int = 0
    retired: bool = False


def same_size(a: planfile.PoolPlan, b: planfile.PoolPlan) -> bool:
    return (a.pool_size, a.max_overflow) == (b.pool_size, b.max_overflow)


class Pools:
    def __init__(self, engine_factory: Callable[[planfile.PoolPlan], AsyncEngine],
                 plan: planfile.PoolPlan) -> None:
        self._factory = engine_factory
        self._current = self._slot(plan)
        self._disposing: set[asyncio.Task[None]] = set()
        self._retired: set[Slot] = set()  # replaced, still open until their last lease ends
        self.swaps = 0

    def _slot(self, plan: planfile.PoolPlan) -> Slot:
        engine = self._factory(plan)
        return Slot(engine=engine, plan=plan,
                    sessionmaker=async_sessionmaker(engine, expire_on_commit=False))

    @property
    def current(self) -> Slot:
        return self._current

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Slot]:
        """The current slot, kept alive until the caller is done with it."""
        slot = self._current
        slot.leases += 1
        try:
            yield slot
        finally:
            slot.leases -= 1
            if slot.retired and slot.leases == 0:
                self._dispose_later(slot)

    async def apply(self, plan: planfile.PoolPlan) -> bool:
        """Make `plan` current. Returns True when the pool was replaced (size changed)."""
        old = self._current
        if same_size(old.plan, plan):
            old.plan = plan  # a new generation with the same sizes: nothing to rebuild
            return False
        self._current = self._slot(plan)
        self.swaps += 1
        old.retired = True
        self._retired.add(old)
        log.info("pool swapped: pool_size %d -> %d, max_overflow %d -> %d (plan generation %d)",
                 old.plan.pool_size, plan.pool_size, old.plan.max_overflow, plan.max_overflow,
                 plan.generation)
        if old.leases == 0:
            self._dispose_later(old)
        return True

    def _dispose_later(self, slot: Slot) -> None:
        task = asyncio.get_running_loop().create_task(self._dispose(slot))
        self._disposing.add(task)
        task.add_done_callback(self._disposing.discard)

    async def _dispose(self, slot: Slot) -> None:
        await slot.engine.dispose()
        self._retired.discard(slot)
        log.info("old pool (pool_size %d) disposed: its connections are closed",
                 slot.plan.pool_size)

    async def close(self) -> None:
        """Dispose everything (lifespan shutdown)."""
        if self._disposing:
            await asyncio.gather(*self._disposing, return_exceptions=True)
        await self._current.engine.dispose()

    def status(self) -> dict[str, object]:
        """What /pool reports for this worker."""
        return poolstatus.pool_status(self._current.plan, self._current.engine.pool,
                                      swaps=self.swaps, retired_open=len(self._retired))
