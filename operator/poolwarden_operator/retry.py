"""Requests that are never lost: a reconcile that fails is retried in the background.

kopf never retries ``@kopf.on.event`` handlers, so a pass that fails (an API error, a 403 while
RBAC is being changed) would otherwise wait for the next event or the drift check. Each failed
key gets one pending retry task with bounded exponential backoff that runs until a pass for the
key succeeds; further failures of the same key while it is pending add nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable

from poolwarden_operator import coalesce

log = logging.getLogger(__name__)

FIRST_DELAY = 0.5
MAX_DELAY = 30.0


class Retrier:
    def __init__(
        self,
        coalescer: coalesce.Coalescer,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self._coalescer = coalescer
        self._first, self._max = first_delay, max_delay
        self._pending: dict[Hashable, asyncio.Task[None]] = {}

    @property
    def pending(self) -> set[Hashable]:
        return set(self._pending)

    async def request(self, key: Hashable) -> bool:
        """Run a pass for ``key``; on failure schedule a retry and return False."""
        try:
            await self._coalescer.request(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is retried
            log.warning("reconcile of %s failed, retrying in the background: %s", key, _short(exc))
            self._schedule(key)
            return False
        return True

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _schedule(self, key: Hashable) -> None:
        if key not in self._pending:
            self._pending[key] = asyncio.create_task(self._retry(key), name=f"retry {key}")

    async def _retry(self, key: Hashable) -> None:
        delay = self._first
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._coalescer.request(key)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - retried until it succeeds
                    delay = min(self._max, delay * 2)
                    log.warning("retry of %s failed, next in %.1fs: %s", key, delay, _short(exc))
                else:
                    log.info("retry of %s succeeded", key)
                    return
        finally:
            self._pending.pop(key, None)


def _short(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    if status is not None:
        return f"{type(exc).__name__} {status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"[:300]


RECHECK_FIRST = 1.0
"""Seconds after a pass that found pods lagging until the next pass asks them again."""


class Rechecks:
    """A later pass for a budget whose pods are not all on its plan yet (``Applied`` False).

    One pending recheck per key; the delay doubles (up to ``max_delay``, the drift interval)
    while the pods keep lagging and starts over once they all confirm.
    """

    def __init__(self, retrier: Retrier, max_delay: float, first: float = RECHECK_FIRST) -> None:
        self._retrier = retrier
        self._first, self._max = first, max(first, max_delay)
        self._delays: dict[Hashable, float] = {}
        self._pending: dict[Hashable, asyncio.Task[None]] = {}

    def after_pass(self, key: Hashable, lagging: bool) -> None:
        if not lagging:
            self._delays.pop(key, None)
            return
        if key in self._pending:
            return
        delay = min(self._delays.get(key, self._first / 2) * 2, self._max)
        self._delays[key] = delay
        self._pending[key] = asyncio.create_task(self._later(key, delay), name=f"recheck {key}")

    async def _later(self, key: Hashable, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._pending.pop(key, None)
        await self._retrier.request(key)

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
