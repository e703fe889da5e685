"""Per-budget coalescing: bursts collapse, runs never overlap, the last run sees the latest."""

from __future__ import annotations

import asyncio

import pytest

from poolwarden_operator import coalesce


async def test_a_burst_collapses_and_the_last_run_sees_the_latest_value():
    state = {"value": 0}
    seen: list[int] = []
    running = 0

    async def work(key):
        nonlocal running
        running += 1
        assert running == 1, "runs for one key must never overlap"
        observed = state["value"]
        await asyncio.sleep(0.01)
        seen.append(observed)
        running -= 1

    c = coalesce.Coalescer(work)
    waiters = []
    for value in range(1, 201):
        state["value"] = value
        waiters.append(asyncio.create_task(c.request("budget")))
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert seen[-1] == 200
    assert c.runs < 20


async def test_keys_run_independently_and_errors_reach_the_waiters():
    async def work(key):
        if key == "bad":
            raise RuntimeError("boom")

    c = coalesce.Coalescer(work)
    await c.request("good")
    with pytest.raises(RuntimeError, match="boom"):
        await c.request("bad")
    await c.request("good")  # the failed key does not block others
    assert c.runs == 3
