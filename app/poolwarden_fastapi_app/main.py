"""The ASGI application factory: `gunicorn 'poolwarden_fastapi_app.main:create_app()'`.

`create_app()` builds only the FastAPI object, so gunicorn's `--preload` is safe: settings,
the plan-following engine (`poolwarden.fastapi.follow`) and metrics are created in `lifespan`,
inside each worker after fork, and the engine is disposed there when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

import poolwarden.fastapi
from poolwarden import aio, metrics
from poolwarden_fastapi_app import config, errors, models, runtime
from poolwarden_fastapi_app.routes import health, items, probe
from poolwarden_fastapi_app.routes import pool as pool_routes

log = logging.getLogger("poolwarden_fastapi_app")
SCHEMA_LOCK_ID = 7_104_205  # pg_advisory_xact_lock key: one worker creates the schema at a time


def create_app(settings: config.Settings | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or config.Settings()
        logging.basicConfig(level=s.log_level.upper(),
                            format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
        observer = metrics.PoolMetrics()
        async with poolwarden.fastapi.follow(
                app, aio.engine_factory(s.url(), s.engine_options()), plan_file=s.plan_file,
                default=s.default_plan(), poll=s.plan_poll, observer=observer) as engine:
            rt = runtime.Runtime(settings=s, engine=engine, metrics=observer)
            app.state.runtime = rt
            schema_task = asyncio.create_task(
                aio.create_all_when_reachable(engine, models.Base.metadata,
                                              lock_id=SCHEMA_LOCK_ID) if s.create_schema
                else asyncio.sleep(0))
            schema_task.add_done_callback(lambda _: log.info("worker ready: %s", engine.status()))
            rt.schema = schema_task
            try:
                yield
            finally:
                schema_task.cancel()

    app = FastAPI(title="poolwarden app", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    for router in (health.router, pool_routes.router, items.router, probe.router):
        app.include_router(router)
    return app
