"""Request dependencies: a session per request (commit or roll back) and a read-only one.

Both end *before* the response is sent (`scope="function"`), so a failed commit is an error
response, never a success the database did not keep.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncSession

from app import runtime as runtime_mod


def get_runtime(request: Request) -> runtime_mod.Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[runtime_mod.Runtime, Depends(get_runtime)]


async def _checkout(rt: runtime_mod.Runtime, session: AsyncSession) -> None:
    """Take a pooled connection now, timing the wait (pool_timeout bounds it)."""
    started = time.perf_counter()
    try:
        await session.connection()
    except exc.TimeoutError:
        rt.metrics.errors.labels("pool_timeout").inc()
        raise
    finally:
        rt.metrics.checkout_wait.observe(time.perf_counter() - started)
        rt.metrics.observe_pool(rt.pools.status())


async def get_session(rt: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with rt.pools.lease() as slot, slot.sessionmaker() as session:
        await _checkout(rt, session)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            rt.metrics.observe_pool(rt.pools.status())


async def get_readonly_session(rt: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with rt.pools.lease() as slot, slot.sessionmaker() as session:
        await _checkout(rt, session)
        await session.execute(text("SET TRANSACTION READ ONLY"))
        try:
            yield session
        finally:
            await session.rollback()  # nothing to keep: end the read-only transaction
            rt.metrics.observe_pool(rt.pools.status())


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadOnlySessionDep = Annotated[AsyncSession, Depends(get_readonly_session, scope="function")]
