"""The orphaned-pool defect, for the shrink test to replay: the reference app with a pool swap
that disposes the old engine at once, while requests still hold its connections. Those
connections go back into the orphaned pool when the requests end, and stay open there.
Never do this; `poolwarden.aio.PlanEngine` disposes a pool after its last lease ends, and
closes any connection given back to a retired pool."""

from sqlalchemy.ext.asyncio import async_sessionmaker

from poolwarden import aio
from poolwarden_fastapi_app import main


async def apply_and_dispose_at_once(self: aio.PlanEngine, plan) -> bool:  # noqa: ANN001
    old = self._current
    if aio.same_size(old.plan, plan):
        old.plan = plan
        return False
    engine = self._factory(plan)  # no retired-pool guard: a plain engine
    self._current = aio.Slot(engine=engine, plan=plan,
                             sessionmaker=async_sessionmaker(engine, expire_on_commit=False))
    self.swaps += 1
    await old.engine.dispose()  # requests in flight still hold some of its connections
    return True


aio.PlanEngine.apply = apply_and_dispose_at_once
create_app = main.create_app
