"""poolwarden_fastapi_app.config.Settings: POOLWARDEN_* environment, defaults, validation."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from poolwarden_fastapi_app import config


def test_reads_poolwarden_environment(monkeypatch):
    monkeypatch.setenv("POOLWARDEN_DB_HOST", "pgbouncer.db")
    monkeypatch.setenv("POOLWARDEN_DB_PORT", "6543")
    monkeypatch.setenv("POOLWARDEN_DB_PASSWORD", "s3cret")
    monkeypatch.setenv("POOLWARDEN_POOL_SIZE", "7")
    monkeypatch.setenv("POOLWARDEN_STATEMENT_CACHE", "false")
    monkeypatch.setenv("POOLWARDEN_PLAN_FILE", "/tmp/plan.json")
    settings = config.Settings()
    assert (settings.db_host, settings.db_port, settings.pool_size) == ("pgbouncer.db", 6543, 7)
    assert settings.db_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.statement_cache is False
    assert settings.plan_file == Path("/tmp/plan.json")


def test_defaults_match_the_chart_contract(monkeypatch):
    for name in ("POOLWARDEN_PLAN_FILE", "POOLWARDEN_DB_PORT", "POOLWARDEN_POOL_CLASS"):
        monkeypatch.delenv(name, raising=False)
    settings = config.Settings()
    assert settings.plan_file == Path("/etc/poolwarden/plan/plan.json")
    assert settings.db_port == 6432
    assert settings.pool_class == "queue"
    assert settings.pool_pre_ping is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POOLWARDEN_POOL_SIZE", "0"),
        ("POOLWARDEN_MAX_OVERFLOW", "-1"),
        ("POOLWARDEN_POOL_TIMEOUT", "0"),
        ("POOLWARDEN_POOL_CLASS", "static"),
    ],
)
def test_rejects_values_that_cannot_work(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError) as raised:
        config.Settings()
    assert name.removeprefix("POOLWARDEN_").lower() in str(raised.value)
