"""poolwarden.fastapi: the lifespan helper puts a plan-following engine on the app and the
plan file resizes it (a real FastAPI app run in process with its lifespan, a real watch;
engines that never connect, so no server)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from poolwarden import planfile
from poolwarden.fastapi import EngineDep, SessionDep, lifespan, pool_status

URL = "postgresql+asyncpg://app:pw@127.0.0.1:1/app"  # nothing listens there


def make_app(plan_file) -> FastAPI:
    app = FastAPI(lifespan=lifespan(URL, plan_file=plan_file))
    app.get("/pool")(pool_status)

    @app.get("/sizes")
    async def sizes(engine: EngineDep) -> list[int]:
        pool = engine.current.engine.pool
        return [pool.size(), engine.plan.generation]

    @app.get("/needs-a-session")
    async def needs_a_session(session: SessionDep) -> str:  # pragma: no cover (never reached)
        return "unreachable"

    return app


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process with its lifespan running, as a server would run it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


async def test_lifespan_builds_the_engine_from_the_plan_file_and_follows_it(tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(planfile.render(planfile.PoolPlan(pool_size=3, max_overflow=1,
                                                           generation=4)))
    async with serving(make_app(plan_file)) as client:
        status = (await client.get("/pool")).json()
        assert (status["pool_size"], status["max_overflow"], status["generation"]) == (3, 1, 4)
        assert (await client.get("/sizes")).json() == [3, 4]

        tmp = tmp_path / ".plan.json.tmp"
        tmp.write_text(planfile.render(planfile.PoolPlan(pool_size=2, max_overflow=0,
                                                         generation=5)))
        tmp.replace(plan_file)
        deadline = time.monotonic() + 10
        while (await client.get("/sizes")).json() != [2, 5]:
            assert time.monotonic() < deadline, (await client.get("/pool")).json()
            await asyncio.sleep(0.1)
        assert (await client.get("/pool")).json()["swaps"] == 1


async def test_without_a_plan_file_the_defaults_hold(tmp_path):
    async with serving(make_app(tmp_path / "absent" / "plan.json")) as client:
        status = (await client.get("/pool")).json()
        assert (status["pool_size"], status["max_overflow"], status["generation"]) == (5, 0, 0)


async def test_a_session_dependency_without_the_lifespan_says_what_to_do():
    app = FastAPI()

    @app.get("/x")
    async def x(session: SessionDep) -> str:  # pragma: no cover (never reached)
        return "unreachable"

    async with serving(app) as client:
        with pytest.raises(RuntimeError, match="lifespan"):
            await client.get("/x")
