"""Ask consumer pods for their plan generation over HTTP: once per pod per pass, a short
timeout, bounded concurrency, on the event loop (no worker threads: those serve the API
client). What they answer is judged in ``applied`` (pure)."""

from __future__ import annotations

import asyncio
import urllib.parse

from poolwarden_operator import applied

TIMEOUT = 0.5
"""Seconds a pod has to answer; a slower pod counts as lagging (no answer) this pass."""
CONCURRENCY = 32
"""Pods asked at once."""
LIMIT = 1 << 20
"""Bytes read from one answer at most."""


async def reports(targets: list[applied.Target]) -> list[applied.Report]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(target: applied.Target) -> applied.Report:
        async with gate:
            try:
                text = await asyncio.wait_for(get(target.url), TIMEOUT)
                found = applied.worker_generations(text)
            except TimeoutError:
                return applied.Report(target.consumer, target.pod, None, "no answer in time")
            except (OSError, ValueError) as exc:  # refused, reset, not an exposition
                return applied.Report(target.consumer, target.pod, None, type(exc).__name__)
            return applied.Report(target.consumer, target.pod, found)

    return list(await asyncio.gather(*(one(t) for t in targets)))


async def get(url: str) -> str:
    """The body of a plain HTTP/1.0 GET (the server closes the connection after it)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port, limit=LIMIT)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {authority}\r\n\r\n"
        writer.write(request.encode("ascii"))
        await writer.drain()
        data = await reader.read(LIMIT)
        while len(data) < LIMIT:
            more = await reader.read(LIMIT - len(data))
            if not more:
                break
            data += more
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise ValueError(f"HTTP status {status[1:2]!r}")
    return body.decode("utf-8", "replace")
