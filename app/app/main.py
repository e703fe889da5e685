"""The ASGI application factory: `gunicorn 'app.main:create_app()'`.

`create_app()` builds only the FastAPI object, so gunicorn's `--preload` is safe: settings,
engine, plan watcher and metrics are created in `lifespan`, inside each worker after fork,
and the engine is disposed there when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import config, db, errors, metrics, planwatch, pool, runtime
from app.routes import health, items, probe
from app.routes import pool as pool_routes
from poolwarden import planfile

log = logging.getLogger("app")


def create_app(settings: config.Settings | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or config.Settings()
        logging.basicConfig(level=s.log_level.upper(),
                            format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
        default = planfile.PoolPlan(pool_size=s.pool_size, max_overflow=s.max_overflow)
        watcher = planwatch.PlanWatcher(s.plan_file, default, poll=s.plan_poll)
        pools = pool.Pools(lambda plan: db.build_engine(s, plan), watcher.initial())
        rt = runtime.Runtime(settings=s, pools=pools, watcher=watcher, metrics=metrics.Metrics())
        rt.metrics.observe_pool(pools.status())
        app.state.runtime = rt
        stop = asyncio.Event()
        watch_task = asyncio.create_task(watcher.run(pools, stop))
        schema_task = asyncio.create_task(
            db.create_schema_when_reachable(pools.current.engine) if s.create_schema
            else asyncio.sleep(0))
        schema_task.add_done_callback(lambda _: log.info("worker ready: %s", pools.status()))
        rt.schema = schema_task
        try:
            yield
        finally:
            schema_task.cancel()
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(watch_task, timeout=5)
            await pools.close()

    app = FastAPI(title="poolwarden app", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    for router in (health.router, pool_routes.router, items.router, probe.router):
        app.include_router(router)
    return app
