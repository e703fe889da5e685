"""poolwarden.aio.build_engine (with the reference app's settings): the engine's connection
arguments for each prepared-statement mode, and the pool settings taken from the plan
(engines are built, never connected: no server needed)."""

from __future__ import annotations

import asyncio
import os

from sqlalchemy.pool import NullPool

from poolwarden import aio, planfile
from poolwarden_fastapi_app import config


def settings(**overrides) -> config.Settings:
    values = {
        "db_host": "db",
        "db_port": 6432,
        "db_name": "app",
        "db_user": "app",
        "db_password": "pw",
        "instance": "pod-1",
    }
    return config.Settings(**{**values, **overrides})


def build(s: config.Settings, plan: planfile.PoolPlan):
    return aio.build_engine(s.url(), plan, s.engine_options())


def test_statement_cache_on_keeps_asyncpg_defaults():
    args = aio.connect_args(settings(statement_cache=True).engine_options())
    assert "statement_cache_size" not in args
    assert "prepared_statement_name_func" not in args
    assert args["server_settings"] == {"application_name": f"pod-1/{os.getpid()}", "jit": "off"}


def test_statement_cache_off_is_the_pgbouncer_fallback():
    args = aio.connect_args(settings(statement_cache=False).engine_options())
    assert args["statement_cache_size"] == 0
    assert args["prepared_statement_cache_size"] == 0
    names = {args["prepared_statement_name_func"]() for _ in range(100)}
    assert len(names) == 100  # unique: never collides with another client's statement


def test_application_name_fits_postgres_limit():
    name = aio.application_name(settings(instance="x" * 100).instance)
    assert len(name) <= 63
    assert name.endswith(f"/{os.getpid()}")  # the worker stays identifiable


def test_engine_pool_follows_the_plan():
    engine = build(
        settings(pool_timeout=0.5, pool_recycle=60),
        planfile.PoolPlan(pool_size=3, max_overflow=2, generation=4),
    )
    try:
        assert engine.pool.size() == 3
        assert engine.pool._max_overflow == 2
        assert engine.pool.timeout() == 0.5
        assert engine.url.render_as_string(hide_password=True).startswith(
            "postgresql+asyncpg://app:***@db:6432/app"
        )
    finally:
        asyncio.run(engine.dispose())


def test_null_pool_for_comparison():
    engine = build(
        settings(pool_class="null"), planfile.PoolPlan(pool_size=3, max_overflow=0)
    )
    try:
        assert isinstance(engine.pool, NullPool)
    finally:
        asyncio.run(engine.dispose())
