"""Ask pods over HTTP: consumer pods for their plan generation, PgBouncer pods' exporter
sidecars for their effective config and pools. Once per pod per pass (or ledger sample), a
short timeout, bounded concurrency, on the event loop with aiohttp (kopf's own HTTP client; no
worker threads: those serve the API client). What they answer is read and judged in
``applied`` and ``bouncers`` (pure)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import aiohttp

from poolwarden_operator import applied, bouncers

TIMEOUT = 0.5
"""Seconds a pod has to answer; a slower pod counts as lagging (no answer) this pass."""
CONCURRENCY = 32
"""Pods asked at once."""
LIMIT = 1 << 20
"""Bytes read from one answer at most."""
T = TypeVar("T")


async def reports(targets: list[applied.Target]) -> list[applied.Report]:
    """Each consumer pod's worker generations (``applied.worker_generations``)."""
    answers = await _read([t.url for t in targets], applied.worker_generations)
    return [
        applied.Report(t.consumer, t.pod, found, error)
        for t, (found, error) in zip(targets, answers, strict=True)
    ]


async def bouncer_reports(targets: list[bouncers.Target]) -> list[bouncers.Report]:
    """Each PgBouncer pod's exporter read once (``bouncers.parse``)."""
    answers = await _read([t.url for t in targets], bouncers.parse)
    return [
        bouncers.Report(t.pod, found, error)
        for t, (found, error) in zip(targets, answers, strict=True)
    ]


async def _read(urls: list[str], parse: Callable[[str], T]) -> list[tuple[T | None, str]]:
    """Every URL read once, concurrently: (parsed answer, "") or (None, why not)."""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=True)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     trust_env=False) as session:

        async def one(url: str) -> tuple[T | None, str]:
            try:
                return parse(await get(session, url)), ""
            except TimeoutError:
                return None, "no answer in time"
            except (OSError, ValueError, aiohttp.ClientError) as exc:  # refused, reset, 404
                return None, type(exc).__name__

        return list(await asyncio.gather(*(one(u) for u in urls)))


async def get(session: aiohttp.ClientSession, url: str) -> str:
    """The body of a GET answered 200 (at most LIMIT bytes); ValueError for any other status."""
    async with session.get(url, allow_redirects=False) as response:
        if response.status != 200:
            raise ValueError(f"HTTP status {response.status}")
        body = await response.content.read(LIMIT)
        return body.decode(response.charset or "utf-8", "replace")
