"""What the operator's Applied check reads from a Flask pod: every worker's plan generation in
/metrics (gunicorn's multiprocess directory), each worker publishing its own as soon as it
applies a plan, not only once it has answered /pool or /metrics itself."""

from __future__ import annotations

import time

import httpx

from poolwarden import planfile
from poolwarden_operator import applied


def generations(client: httpx.Client) -> tuple[int, ...]:
    return applied.worker_generations(client.get("/metrics").text)


def test_every_worker_publishes_its_generation_without_being_asked(start_flask):
    app = start_flask(workers=2, threads=2)
    # One kept-alive connection: always the same worker answers, the other is never asked.
    with httpx.Client(base_url=app.url, timeout=10) as client:
        deadline = time.monotonic() + 30
        while len(seen := generations(client)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert seen == (0, 0), f"both workers publish the defaults' generation 0: {seen}"
        app.write_plan(planfile.PoolPlan(pool_size=2, max_overflow=0, generation=5))
        deadline = time.monotonic() + 30
        while (seen := generations(client)) != (5, 5) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert seen == (5, 5), f"workers' generations in /metrics: {seen}"
