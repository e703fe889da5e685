"""Building one SQLAlchemy async engine (asyncpg) for one pool plan, and the schema.

Prepared statements behind PgBouncer's transaction mode are decided here, explicitly:

* ``statement_cache=True`` (default): asyncpg names and caches its prepared statements as
  usual. Correct only when PgBouncer tracks them (PgBouncer >= 1.21 with
  ``max_prepared_statements`` > 0; our PgBouncer image turns it on) or with no PgBouncer.
* ``statement_cache=False``: asyncpg's statement cache and SQLAlchemy's
  ``prepared_statement_cache_size`` are 0, and every statement gets a unique name
  (``prepared_statement_name_func``), so a statement is prepared and used inside one
  transaction on one server connection and no name can collide with another client's. Use it
  with older PgBouncer or ``max_prepared_statements = 0``.

The engine is always built inside a worker (lifespan), never before gunicorn forks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

from sqlalchemy import URL, event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app import config, models
from poolwarden import planfile

log = logging.getLogger("app.db")
SCHEMA_LOCK_ID = 7_104_205  # pg_advisory_xact_lock key: one worker creates the schema at a time


def url(settings: config.Settings) -> URL:
    return URL.create(
        "postgresql+asyncpg",
        username=settings.db_user,
        password=settings.db_password.get_secret_value(),
        host=settings.db_host,
        port=settings.db_port,
        database=settings.db_name,
    )


def application_name(settings: config.Settings) -> str:
    """`<instance>/<pid>`: which pod and which worker a server connection belongs to."""
    pid = str(os.getpid())
    return f"{settings.instance[:62 - len(pid)]}/{pid}"  # PostgreSQL keeps 63 bytes


def unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def connect_args(settings: config.Settings) -> dict[str, object]:
    args: dict[str, object] = {
        "timeout": settings.connect_timeout,
        "command_timeout": settings.command_timeout,
        # Startup parameters. PgBouncer carries application_name per client; it accepts and
        # drops jit (not reported by PostgreSQL, so not trackable): behind PgBouncer jit is
        # set for the role (ALTER ROLE ... SET jit = off), directly it comes from here.
        "server_settings": {
            "application_name": application_name(settings),
            "jit": "on" if settings.jit else "off",
        },
    }
    if not settings.statement_cache:
        args.update(
            statement_cache_size=0,
            prepared_statement_cache_size=0,
            prepared_statement_name_func=unique_statement_name,
        )
    return args


def build_engine(settings: config.Settings, plan: planfile.PoolPlan) -> AsyncEngine:
    """An engine whose pool has the plan's size; timeouts and recycling from the settings."""
    pool_args: dict[str, object]
    if settings.pool_class == "null":
        pool_args = {"poolclass": NullPool}
    else:
        pool_args = {
            "pool_size": plan.pool_size,
            "max_overflow": plan.max_overflow,
            "pool_timeout": settings.pool_timeout,
            "pool_recycle": settings.pool_recycle,
            "pool_pre_ping": settings.pool_pre_ping,
            "pool_use_lifo": True,  # idle connections beyond need age out at PgBouncer
        }
    engine = create_async_engine(url(settings), connect_args=connect_args(settings), **pool_args)
    install_slow_query_log(engine, threshold=settings.slow_query_seconds)
    return engine


def install_slow_query_log(engine: AsyncEngine, *, threshold: float) -> None:
    """Log every statement slower than `threshold` seconds, with its duration."""
    if threshold <= 0:
        return
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        conn.info["poolwarden_query_start"] = time.perf_counter()

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _end(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        elapsed = time.perf_counter() - conn.info.get("poolwarden_query_start", time.perf_counter())
        if elapsed >= threshold:
            log.warning("slow query: %.3fs (threshold %.3fs): %s",
                        elapsed, threshold, " ".join(statement.split())[:300])


async def create_schema_when_reachable(engine: AsyncEngine, *, retry_max: float = 2.0) -> None:
    """Create the schema as soon as the database answers; retry until then.

    A worker must not die because PostgreSQL is still starting (a fresh `helm install` starts
    everything at once): it stays alive (`/healthz`) and unready (`/readyz`) until this returns.
    """
    delay, last = 0.1, ""
    while True:
        try:
            await create_schema(engine)
            return
        except (OSError, TimeoutError, exc.SQLAlchemyError) as error:
            problem = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if problem != last:  # one line per distinct problem, not one per retry
                log.warning("database not reachable yet, schema not created; retrying: %s", problem)
                last = problem
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)


async def create_schema(engine: AsyncEngine) -> None:
    """Create the tables once; workers starting together serialize on an advisory lock."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_ID})
        await conn.run_sync(models.Base.metadata.create_all)
