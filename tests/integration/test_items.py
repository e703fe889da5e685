"""The items resource through PgBouncer (transaction mode, SCRAM), under gunicorn workers."""

from __future__ import annotations

import time

import asyncpg
import httpx

from poolwarden import aio
from poolwarden_fastapi_app import config


def test_create_read_list_items_through_pgbouncer(start_app, stack):
    app = start_app(workers=2)
    with httpx.Client(base_url=app.url, timeout=10) as client:
        created = [client.post("/items", json={"name": f"item {i}", "note": "n"})
                   for i in range(5)]
        assert [r.status_code for r in created] == [201] * 5
        ids = [r.json()["id"] for r in created]

        for item_id in ids:
            got = client.get(f"/items/{item_id}")
            assert got.status_code == 200
            assert got.json()["id"] == item_id
        listed = client.get("/items", params={"limit": 500}).json()
        assert set(ids) <= {item["id"] for item in listed}

        assert client.get("/items/999999999").status_code == 404
        assert client.post("/items", json={"name": ""}).status_code == 422

    # The rows are really in PostgreSQL (committed, not only seen by the same session).
    count = stack.psql(f"SELECT count(*) FROM items WHERE id IN ({','.join(map(str, ids))})")
    assert int(count) == 5


def test_server_settings_pass_through_pgbouncer(stack):
    """application_name (pod/worker identity) reaches the server session through PgBouncer,
    and jit is off there (PgBouncer drops the startup parameter; the role setting holds)."""
    settings = config.Settings(db_host="127.0.0.1", db_port=stack.bouncer_port, db_name="app",
                               db_user="app", db_password=stack.app_password,
                               instance="pod-a")
    args = aio.connect_args(settings.engine_options())

    async def check() -> tuple[str, str]:
        conn = await asyncpg.connect(host="127.0.0.1", port=stack.bouncer_port, user="app",
                                     password=stack.app_password, database="app",
                                     server_settings=args["server_settings"])
        try:
            async with conn.transaction():
                return (await conn.fetchval("SELECT current_setting('application_name')"),
                        await conn.fetchval("SELECT current_setting('jit')"))
        finally:
            await conn.close()

    import asyncio

    name, jit = asyncio.run(check())
    assert name == aio.application_name(settings.instance)
    assert name.startswith("pod-a/")
    assert jit == "off"


def test_database_down_means_503_with_retry_after_and_alive(start_app):
    import devstack

    closed_port = devstack.free_port()  # nothing listens here
    app = start_app(workers=1, wait_ready=False, POOLWARDEN_DB_PORT=str(closed_port),
                    POOLWARDEN_CREATE_SCHEMA="false", POOLWARDEN_CONNECT_TIMEOUT="1")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        wait = time.monotonic() + 60
        while client.get("/healthz").status_code != 200:  # the worker is still starting
            assert time.monotonic() < wait
            time.sleep(0.2)
        assert client.get("/healthz").json() == {"status": "ok"}  # liveness: no database
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "Retry-After" in ready.headers
        items = client.get("/items")
        assert items.status_code == 503
        assert items.headers["Retry-After"] == "1"
        # The chart's readiness probe: a database outage hits every pod alike, so the pod stays
        # in the Service and answers 503 + Retry-After instead of refusing connections.
        local = client.get("/readyz", params={"database": "false"})
        assert local.status_code == 200 and local.json()["database"] == "not checked"


def test_slow_queries_are_logged_with_their_duration(start_app):
    app = start_app(workers=1, POOLWARDEN_SLOW_QUERY_SECONDS="0.2")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        assert client.get("/probe/3", params={"value": 1, "sleep": 0.5}).status_code == 200
    deadline = time.monotonic() + 10
    while "variant 3" not in app.log_text():
        assert time.monotonic() < deadline, app.log_text()[-2000:]
        time.sleep(0.1)
    # (Other statements may be slow too on a loaded machine; this one must be, and say so.)
    line = next(line for line in app.log_text().splitlines() if "variant 3" in line)
    assert "slow query: " in line and "(threshold 0.200s)" in line
    assert float(line.split("slow query: ")[1].split("s ")[0]) >= 0.5


def test_metrics_cover_every_worker(start_app):
    app = start_app(workers=2)
    pids = set(app.pools())
    text = httpx.get(f"{app.url}/metrics").text
    for pid in pids:
        assert f'poolwarden_pool_size{{pid="{pid}"}} 5.0' in text
    assert "poolwarden_pool_checkout_wait_seconds_bucket" in text
    assert 'poolwarden_db_errors_total{kind="pool_timeout"}' in text


def test_app_started_before_its_database_waits_alive_then_becomes_ready(start_app, stack):
    """A fresh `helm install` starts the app before PgBouncer/PostgreSQL answer: no crash loop."""
    import devstack

    late_port = devstack.free_port()  # PgBouncer will only listen here later
    app = start_app(workers=1, wait_ready=False, POOLWARDEN_DB_PORT=str(late_port),
                    POOLWARDEN_CONNECT_TIMEOUT="1")
    name = f"pgbouncer-late-{late_port}"
    with httpx.Client(base_url=app.url, timeout=30) as client:
        wait = time.monotonic() + 60
        while True:  # the worker is still starting
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < wait, app.log_text()
            time.sleep(0.2)
        for params in ({}, {"database": "false"}):  # never ready before the database answered
            ready = client.get("/readyz", params=params)
            assert ready.status_code == 503, ready.text
            assert ready.json()["reason"] == "schema not created yet"
        try:
            stack.start_pgbouncer(name=name, port=late_port)
            wait = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < wait, app.log_text()
                time.sleep(0.3)
            created = client.post("/items", json={"name": "late", "note": "before its database"})
            assert created.status_code == 201, created.text
        finally:
            stack.stop_one(name)
    log = app.log_text()
    warnings = log.count("database not reachable yet")
    assert 1 <= warnings <= 2, log  # a line per distinct problem, not one per retry
    assert "Worker exiting" not in log and "Traceback" not in log, log


def test_read_only_session_reads_and_refuses_writes(stack):
    """The read-only dependency (GET /items) runs in `SET TRANSACTION READ ONLY`: PostgreSQL
    itself refuses a write there, through PgBouncer, and the transaction is rolled back."""
    import asyncio

    import pytest
    from sqlalchemy import exc, text

    from poolwarden import fastapi, planfile
    from poolwarden_fastapi_app import models

    settings = config.Settings(db_host="127.0.0.1", db_port=stack.bouncer_port, db_name="app",
                               db_user="app", db_password=stack.app_password, instance="ro-test")

    async def scenario() -> None:
        engine = aio.PlanEngine(aio.engine_factory(settings.url(), settings.engine_options()),
                                planfile.PoolPlan(pool_size=1, max_overflow=0))
        try:
            await aio.create_all_when_reachable(engine, models.Base.metadata)
            session_gen = fastapi.get_readonly_session(engine)
            session = await anext(session_gen)
            await session.execute(text("SELECT count(*) FROM items"))  # reads work
            with pytest.raises(exc.DBAPIError, match="read-only transaction"):
                await session.execute(text("INSERT INTO items (name, note) VALUES ('ro', '')"))
            await session_gen.aclose()  # the dependency's cleanup: roll back, return the conn
            assert engine.status()["checked_out"] == 0
        finally:
            await engine.close()

    asyncio.run(scenario())
