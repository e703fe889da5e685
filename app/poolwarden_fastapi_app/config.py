"""The app's settings: one typed object per process, read from POOLWARDEN_* variables.

What they mean for the engine (`url`, `engine_options`, `default_plan`) is handed to the
plan-following engine of `poolwarden.aio`.

Built in the FastAPI lifespan (after gunicorn forks), never at import. The pool size and
overflow here are the defaults used until a plan file exists; the plan file wins afterwards.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL

from poolwarden import aio, planfile


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POOLWARDEN_", extra="ignore")

    # Where the database (normally PgBouncer) is.
    db_host: str = "127.0.0.1"
    db_port: int = 6432
    db_name: str = "app"
    db_user: str = "app"
    db_password: SecretStr = SecretStr("")

    # The plan file the operator writes (a mounted ConfigMap; optional).
    plan_file: Path = Path("/etc/poolwarden/plan/plan.json")
    plan_poll: bool = Field(False, description="poll the plan file instead of inotify")

    # gunicorn workers per pod (read by gunicorn.conf.py; here for /pool and documentation).
    workers: int = Field(2, ge=1)

    # Pool defaults until a plan file exists, and the pool settings a plan does not carry.
    pool_size: int = Field(5, ge=1)
    max_overflow: int = Field(0, ge=0)
    pool_timeout: float = Field(2.0, gt=0, description="seconds to wait for a pooled "
                                "connection before answering 503")
    pool_recycle: int = Field(1800, description="seconds; -1 = never")
    pool_pre_ping: bool = True
    pool_class: Literal["queue", "null"] = Field(
        "queue", description="null = a new connection per request (for comparison only)")

    # Prepared statements: True = asyncpg's statement cache on, correct with PgBouncer >= 1.21
    # and max_prepared_statements > 0 (or with no PgBouncer). False = cache off and unique
    # statement names: the fallback for older PgBouncer or max_prepared_statements = 0.
    statement_cache: bool = True

    connect_timeout: float = Field(5.0, gt=0)
    command_timeout: float = Field(30.0, gt=0)
    jit: bool = Field(False, description="PostgreSQL JIT for this app's sessions")
    instance: str = Field(default_factory=socket.gethostname,
                          description="pod name; application_name is <instance>/<pid>")

    slow_query_seconds: float = Field(0.2, ge=0)
    readiness_timeout: float = Field(2.0, gt=0)
    retry_after_seconds: int = Field(1, ge=1)
    create_schema: bool = True
    log_level: str = "INFO"

    def url(self) -> URL:
        return URL.create(
            "postgresql+asyncpg",
            username=self.db_user,
            password=self.db_password.get_secret_value(),
            host=self.db_host,
            port=self.db_port,
            database=self.db_name,
        )

    def engine_options(self) -> aio.EngineOptions:
        return aio.EngineOptions(
            pool_timeout=self.pool_timeout, pool_recycle=self.pool_recycle,
            pool_pre_ping=self.pool_pre_ping, null_pool=self.pool_class == "null",
            statement_cache=self.statement_cache, instance=self.instance,
            connect_timeout=self.connect_timeout, command_timeout=self.command_timeout,
            jit=self.jit, slow_query_seconds=self.slow_query_seconds)

    def default_plan(self) -> planfile.PoolPlan:
        """The pool until a plan file exists."""
        return planfile.PoolPlan(pool_size=self.pool_size, max_overflow=self.max_overflow)
