"""The items resource through PgBouncer (transaction mode, SCRAM), under gunicorn workers."""

from __future__ import annotations

import asyncpg
import httpx

from app import config, db


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
    args = db.connect_args(settings)

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
    assert name == db.application_name(settings)
    assert name.startswith("pod-a/")
    assert jit == "off"
