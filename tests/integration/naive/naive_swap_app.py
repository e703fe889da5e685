"""The orphaned-pool defect, for the shrink test to replay: the reference app with a pool swap
that disposes the old engine at once, while requests still hold its connections. Those
connections go back into the orphaned pool when the requests end, and stay open there.
Never do this; the plan-following engine disposes a pool after its last lease ends, and closes
any connection given back to a retired pool."""

from app import main, pool


async def apply_and_dispose_at_once(self: pool.Pools, plan) -> bool:  # noqa: ANN001
    old = self._current
    if pool.same_size(old.plan, plan):
        old.plan = plan
        return False
    self._current = self._slot(plan)
    self.swaps += 1
    await old.engine.dispose()  # requests in flight still hold some of its connections
    return True


pool.Pools.apply = apply_and_dispose_at_once
create_app = main.create_app
