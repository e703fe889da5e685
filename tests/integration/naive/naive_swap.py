"""The defective pool swap, for the shrink tests to measure: the old engine is disposed the
moment the plan changes, while requests still hold its connections. `Engine.dispose()` closes
only the idle connections; those checked out go back, when their request ends, to a pool
nobody uses any more, and stay open for as long as the process lives. Never do this;
poolwarden.threaded.Pools disposes the old engine when its last lease ends and closes every
connection returned to a retired engine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from poolwarden import planfile


class NaiveSwap:
    def __init__(self, factory: Callable[[planfile.PoolPlan], Engine],
                 plan: planfile.PoolPlan) -> None:
        self._factory = factory
        self.engine = factory(plan)
        self.plan = plan
        self.orphans: list = []  # the pools left behind, only so close() can end the test clean

    def apply(self, plan: planfile.PoolPlan) -> bool:
        old, self.engine, self.plan = self.engine, self._factory(plan), plan
        self.orphans.append(old.pool)
        old.dispose()  # requests in flight still hold some of its connections
        return True

    @contextlib.contextmanager
    def readonly_session(self) -> Iterator[Session]:
        with sessionmaker(self.engine)() as session:
            try:
                yield session
            finally:
                session.rollback()

    def close(self) -> None:
        self.engine.dispose()
        for pool in self.orphans:
            pool.dispose()
