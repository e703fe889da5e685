"""Ask consumer pods for their plan generation over HTTP: once per pod per pass, a short
timeout, bounded concurrency. What they answer is judged in ``applied`` (pure)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from poolwarden_operator import applied

TIMEOUT = 1.0
"""Seconds a pod has to answer; a slower pod counts as lagging (unreachable) this pass."""
CONCURRENCY = 16
"""Pods asked at once (each request is a worker thread)."""
LIMIT = 1 << 20
"""Bytes read from one answer at most."""


async def reports(targets: list[applied.Target]) -> list[applied.Report]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(target: applied.Target) -> applied.Report:
        async with gate:
            try:
                text = await asyncio.to_thread(_get, target.url)
                found = applied.worker_generations(text)
            except (OSError, ValueError) as exc:  # refused, timed out, not an exposition
                return applied.Report(target.consumer, target.pod, None, type(exc).__name__)
            return applied.Report(target.consumer, target.pod, found)

    return list(await asyncio.gather(*(one(t) for t in targets)))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.read(LIMIT).decode()
