"""Bounded HTTP load against the app's /probe endpoint, checking every answer."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time

import httpx


@dataclasses.dataclass
class LoadResult:
    ok: int = 0
    wrong: int = 0
    failed: int = 0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: list[str] = dataclasses.field(default_factory=list)
    pids: set[int] = dataclasses.field(default_factory=set)
    latencies: list[float] = dataclasses.field(default_factory=list)
    finished: list[float] = dataclasses.field(default_factory=list)  # time.monotonic()

    @property
    def total(self) -> int:
        return self.ok + self.wrong + self.failed

    def summary(self) -> str:
        return (f"{self.total} requests: ok={self.ok} wrong={self.wrong} failed={self.failed} "
                f"statuses={dict(self.statuses)} pids={sorted(self.pids)} "
                f"first errors={self.errors[:5]}")


def expected_answer(variant: int, value: int) -> int:
    return value * (variant + 1) + variant


async def probe_load(base_url: str, *, tasks: int, requests_per_task: int | None = None,
                     stop: asyncio.Event | None = None, sleep: float = 0.0,
                     max_seconds: float = 120.0, result: LoadResult | None = None,
                     spread: bool = False) -> LoadResult:
    """`tasks` concurrent loops, each with its own statement (variant); bounded by count,
    by `stop`, and always by `max_seconds`. `spread`: a new connection per request, so the
    kernel spreads the requests over every worker (kept-alive connections stay with the
    worker that accepted them)."""
    result = result if result is not None else LoadResult()  # pass one to watch progress
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    headers = {"Connection": "close"} if spread else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def loop(variant: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                if requests_per_task is not None and i >= requests_per_task:
                    return
                if requests_per_task is None and stop is not None and stop.is_set():
                    return
                value = variant * 100_000 + i
                i += 1
                params = {"value": value}
                if sleep:
                    params["sleep"] = sleep
                started = time.perf_counter()
                try:
                    response = await client.get(f"/probe/{variant}", params=params,
                                                headers=headers)
                except httpx.HTTPError as exc:
                    result.failed += 1
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.finished.append(time.monotonic())
                result.statuses[response.status_code] += 1
                if response.status_code != 200:
                    result.failed += 1
                    result.errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                body = response.json()
                result.pids.add(body["pid"])
                if body["answer"] != expected_answer(variant, value):
                    result.wrong += 1
                    result.errors.append(f"wrong answer for variant {variant}: {body}")
                else:
                    result.ok += 1

        await asyncio.gather(*(loop(variant) for variant in range(tasks)))
    return result
