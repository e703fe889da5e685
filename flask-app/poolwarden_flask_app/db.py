"""One sync SQLAlchemy engine (psycopg 3) for one pool plan, and the schema.

psycopg 3 behind PgBouncer's transaction mode: psycopg prepares a statement only after it ran
`prepare_threshold` times (5) on one connection; PgBouncer >= 1.21 with
`max_prepared_statements` tracks them (our image turns it on). For an older pooler set
POOLWARDEN_PREPARE_STATEMENTS=false (psycopg never prepares).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from sqlalchemy import URL, create_engine, event, exc, text
from sqlalchemy.engine import Engine

from poolwarden import planfile, threaded
from poolwarden_flask_app import config, models

log = logging.getLogger("poolwarden_flask_app.db")
SCHEMA_LOCK_ID = 7_104_205  # the FastAPI app's key: both create the same table, one at a time


def url(settings: config.Settings) -> URL:
    return URL.create(
        "postgresql+psycopg",
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


def build_engine(settings: config.Settings, plan: planfile.PoolPlan) -> Engine:
    """An engine whose pool has the plan's size; timeouts and recycling from the settings.

    application_name is computed per connection (`do_connect`), in the process that connects:
    an engine built before gunicorn forks still labels each worker's connections with its pid.
    """
    engine = create_engine(
        url(settings), pool_size=plan.pool_size, max_overflow=plan.max_overflow,
        pool_timeout=settings.pool_timeout, pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping, pool_use_lifo=True,
        connect_args={"connect_timeout": max(1, round(settings.connect_timeout)),
                      "prepare_threshold": 5 if settings.prepare_statements else None},
    )

    @event.listens_for(engine, "do_connect")
    def _label(dialect, conn_rec, cargs, cparams):  # noqa: ANN001
        cparams["application_name"] = application_name(settings)

    return engine


class Schema:
    """Creates the schema once the database answers; until then the worker is unready.

    A worker must not die because PostgreSQL is still starting: `ensure()` tries at most once
    per `retry_seconds` (one thread at a time, the others do not wait) and logs one line per
    distinct problem.
    """

    def __init__(self, pools: threaded.Pools, *, enabled: bool = True,
                 retry_seconds: float = 1.0) -> None:
        self.pools = pools
        self.ready = not enabled
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._last_try = 0.0
        self._last_problem = ""

    def ensure(self) -> bool:
        if self.ready:
            return True
        if time.monotonic() - self._last_try < self.retry_seconds:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._last_try = time.monotonic()
            with self.pools.lease() as slot, slot.engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_ID})
                models.Base.metadata.create_all(conn)
            self.ready = True
            log.info("schema ready")
        except (OSError, exc.SQLAlchemyError) as error:
            problem = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if problem != self._last_problem:
                log.warning("database not reachable yet, schema not created; retrying: %s",
                            problem)
                self._last_problem = problem
        finally:
            self._lock.release()
        return self.ready
