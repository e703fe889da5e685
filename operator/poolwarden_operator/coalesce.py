"""Per-key serialization that coalesces bursts: at most one run per key at a time, and every
request is answered by a run that *started after* it, so the last run always sees the latest
state and no stale result is ever written last."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable


class Coalescer:
    def __init__(self, work: Callable[[Hashable], Awaitable[None]]) -> None:
        self._work = work
        self._waiting: dict[Hashable, list[asyncio.Future[None]]] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self.runs = 0

    async def request(self, key: Hashable) -> None:
        """Ask for a run for ``key``; return when a run that started after now has finished."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._drain(key), name=f"poolwarden {key}")
        await future

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, key: Hashable) -> None:
        try:
            while self._waiting.get(key):
                batch = self._waiting.pop(key)
                self.runs += 1
                try:
                    await self._work(key)
                except Exception as exc:  # noqa: BLE001 - handed to every waiter
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._tasks.pop(key, None)
            for future in self._waiting.pop(key, []):
                future.cancel()
