"""FastAPI integration: the plan-following engine in the app's lifespan, and a session per
request that commits or rolls back *before* the response is sent::

    from fastapi import FastAPI
    from poolwarden.fastapi import SessionDep, lifespan

    app = FastAPI(lifespan=lifespan("postgresql+asyncpg://app:pw@pgbouncer:6432/app"))

    @app.get("/answer")
    async def answer(session: SessionDep) -> int:
        return (await session.execute(text("SELECT 42"))).scalar_one()

The engine is built in each worker's lifespan (after gunicorn forks, so `--preload` is safe)
and follows `$POOLWARDEN_PLAN_FILE` (the chart mounts it at /etc/poolwarden/plan/plan.json).
`SessionDep` ends with the route (`Depends(scope="function")`), so a failed commit is an
error response, never a success the database did not keep; `ReadOnlySessionDep` runs a
`READ ONLY` transaction and rolls it back. A request that gets no pooled connection within
`pool_timeout` raises `sqlalchemy.exc.TimeoutError` (answer it with 503 + Retry-After).

Needs the ``fastapi`` extra: ``pip install 'poolwarden[fastapi]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

try:
    from fastapi import Depends, FastAPI, Request
    from sqlalchemy import URL, text
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
except ImportError as error:  # pragma: no cover (the packaging tier checks the message)
    raise ImportError(f"poolwarden.fastapi needs the fastapi extra: "
                      f"pip install 'poolwarden[fastapi]' ({error})") from error

from poolwarden import aio, planfile

STATE_ATTRIBUTE = "poolwarden"
"""`app.state.poolwarden` holds the app's `aio.PlanEngine` while the lifespan runs."""


def get_engine(request: Request) -> aio.PlanEngine:
    engine = getattr(request.app.state, STATE_ATTRIBUTE, None)
    if engine is None:
        raise RuntimeError("this app has no plan-following engine: give FastAPI "
                           "lifespan=poolwarden.fastapi.lifespan(url), or enter "
                           "poolwarden.fastapi.follow(app, ...) in your own lifespan")
    return engine


EngineDep = Annotated[aio.PlanEngine, Depends(get_engine)]


async def get_session(engine: EngineDep) -> AsyncIterator[AsyncSession]:
    """A session on a leased engine: committed when the route returns, else rolled back."""
    async with engine.lease() as slot, slot.sessionmaker() as session:
        await engine.checkout(session)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            engine.observe()


async def get_readonly_session(engine: EngineDep) -> AsyncIterator[AsyncSession]:
    """A session in a READ ONLY transaction, rolled back when the route returns."""
    async with engine.lease() as slot, slot.sessionmaker() as session:
        await engine.checkout(session)
        await session.execute(text("SET TRANSACTION READ ONLY"))
        try:
            yield session
        finally:
            await session.rollback()  # nothing to keep: end the read-only transaction
            engine.observe()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadOnlySessionDep = Annotated[AsyncSession, Depends(get_readonly_session, scope="function")]


def pool_status(engine: EngineDep) -> dict[str, object]:
    """The `/pool` answer (`app.get("/pool")(poolwarden.fastapi.pool_status)`)."""
    engine.observe()
    return engine.status()


@contextlib.asynccontextmanager
async def follow(app: FastAPI, engine_factory: Callable[[planfile.PoolPlan], AsyncEngine], *,
                 plan_file: Path | str | None = None,
                 default: planfile.PoolPlan | None = None, poll: bool = False,
                 observer: aio.PoolObserver | None = None) -> AsyncIterator[aio.PlanEngine]:
    """For your own lifespan: the engine follows the plan and the dependencies find it."""
    async with aio.follow(engine_factory, plan_file=plan_file, default=default, poll=poll,
                          observer=observer) as engine:
        setattr(app.state, STATE_ATTRIBUTE, engine)
        try:
            yield engine
        finally:
            setattr(app.state, STATE_ATTRIBUTE, None)


def lifespan(url: str | URL, *, options: aio.EngineOptions | None = None,
             plan_file: Path | str | None = None, default: planfile.PoolPlan | None = None,
             poll: bool = False, observer: aio.PoolObserver | None = None
             ) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """`FastAPI(lifespan=lifespan(url))`: an engine for `url` that follows the plan file."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with follow(app, aio.engine_factory(url, options), plan_file=plan_file,
                          default=default, poll=poll, observer=observer):
            yield

    return run
