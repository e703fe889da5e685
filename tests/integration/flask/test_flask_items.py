"""The Flask reference service through PgBouncer under gunicorn gthread with --preload: the
items resource, health, /pool, /metrics, and a failed commit answered as an error."""

from __future__ import annotations

import httpx


def test_items_health_pool_metrics(start_flask, stack):
    app = start_flask(workers=2, threads=4)
    with httpx.Client(base_url=app.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        assert client.get("/readyz", params={"database": "false"}).json()["database"] == \
            "not checked"
        created = [client.post("/items", json={"name": f"item {i}", "note": "n"})
                   for i in range(5)]
        assert [r.status_code for r in created] == [201] * 5, [r.text for r in created]
        ids = [r.json()["id"] for r in created]
        got = client.get(f"/items/{ids[0]}")
        assert got.status_code == 200 and got.json()["name"] == "item 0"
        assert client.get("/items/999999999").status_code == 404
        listed = client.get("/items", params={"limit": 500}).json()
        assert set(ids) <= {item["id"] for item in listed}
        assert client.get("/items", params={"limit": 0}).status_code == 422
        assert client.post("/items", json={"name": "a\u0000b"}).status_code == 422
        assert client.post("/items", json={"note": "no name"}).status_code == 422
        assert client.get(f"/items/{2**63}").status_code == 422
        probe = client.get("/probe/7", params={"value": 3}).json()
        assert probe["answer"] == 3 * 8 + 7
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "poolwarden_pool_size" in metrics.text
    pools = app.pools()
    assert len(pools) == 2
    for status in pools.values():
        assert status["pool_size"] == 4  # the default until a plan file exists
        assert status["generation"] == 0
