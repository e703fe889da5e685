"""The service's settings, read from POOLWARDEN_* variables (the names the FastAPI app uses
where they mean the same). The pool size and overflow are the defaults until a plan file
exists; the plan file wins afterwards."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    # gunicorn workers per pod and threads per worker (read by gunicorn.conf.py).
    workers: int = Field(2, ge=1)
    threads: int = Field(4, ge=1)

    # Pool defaults until a plan file exists, and the pool settings a plan does not carry.
    pool_size: int = Field(4, ge=1)
    max_overflow: int = Field(0, ge=0)
    pool_timeout: float = Field(2.0, gt=0, description="seconds to wait for a pooled "
                                "connection before answering 503")
    pool_recycle: int = Field(1800, description="seconds; -1 = never")
    pool_pre_ping: bool = True

    # psycopg prepares a statement run 5 times on a connection; False: never (for PgBouncer
    # before 1.21 or max_prepared_statements = 0).
    prepare_statements: bool = True

    connect_timeout: float = Field(5.0, gt=0)
    instance: str = Field(default_factory=socket.gethostname,
                          description="pod name; application_name is <instance>/<pid>")

    readiness_timeout: float = Field(2.0, gt=0)
    retry_after_seconds: int = Field(1, ge=1)
    create_schema: bool = True
    log_level: str = "INFO"
