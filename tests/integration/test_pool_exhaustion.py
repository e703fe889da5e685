"""An exhausted pool answers 503 with Retry-After at once (pool_timeout), never hangs."""

from __future__ import annotations

import asyncio
import time

import httpx


async def exhaust(url: str) -> tuple[httpx.Response, float, list[tuple[httpx.Response, float]]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        started = time.monotonic()
        slow = asyncio.create_task(client.get("/probe/1", params={"value": 1, "sleep": 5}))
        await asyncio.sleep(0.5)  # the only connection is now busy

        async def fast() -> tuple[httpx.Response, float]:
            response = await client.get("/probe/2", params={"value": 2})
            return response, time.monotonic() - started

        fast_results = await asyncio.gather(*(fast() for _ in range(5)))
        slow_response = await slow
        return slow_response, time.monotonic() - started, fast_results


def test_pool_exhausted_answers_503_before_the_busy_request_ends(start_app):
    app = start_app(workers=1, POOLWARDEN_POOL_SIZE="1", POOLWARDEN_MAX_OVERFLOW="0",
                    POOLWARDEN_POOL_TIMEOUT="0.5", POOLWARDEN_RETRY_AFTER_SECONDS="2")

    slow, slow_done, fast = asyncio.run(exhaust(app.url))

    assert slow.status_code == 200
    for response, done_at in fast:
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert "pool exhausted" in response.json()["detail"]
        # Answered while the busy request was still running: no hang behind it.
        assert done_at < slow_done
    metrics = httpx.get(f"{app.url}/metrics").text
    assert 'poolwarden_db_errors_total{kind="pool_timeout"} 5.0' in metrics
