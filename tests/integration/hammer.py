"""Many PostgreSQL clients hammering a PgBouncer, and pg_stat_activity sampled meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg


@dataclasses.dataclass
class Hammer:
    """`clients` asyncpg connections to PgBouncer, each running short transactions."""

    port: int
    password: str
    clients: int = 200
    app_name: str = "hammer"
    ok: int = 0
    connected: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = dataclasses.field(default_factory=list)

    async def _client(self, number: int) -> None:
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="app", password=self.password,
                database="app", timeout=30, server_settings={"application_name": self.app_name})
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            self.errors.append(f"connect: {type(exc).__name__}: {exc}")
            return
        self.connected += 1
        try:
            while not self._stop.is_set():
                try:
                    value = await conn.fetchval("SELECT $1::int + 0 FROM pg_sleep(0.02)", number)
                    if value != number:
                        self.errors.append(f"wrong answer {value} != {number}")
                    self.ok += 1
                except Exception as exc:  # noqa: BLE001
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]

    async def all_connected(self, timeout: float = 120.0) -> None:
        """Wait (with a deadline) until every client has connected or failed to."""
        deadline = time.monotonic() + timeout
        while self.connected + len(self.errors) < self.clients:
            assert time.monotonic() < deadline, f"{self.connected} of {self.clients} connected"
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


class Sampler:
    """Counts PostgreSQL backends whose application_name is `app_name`, every `interval`."""

    def __init__(self, dsn: str, app_name: str, interval: float = 0.05) -> None:
        self.dsn, self.app_name, self.interval = dsn, app_name, interval
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    self.app_name)
                self.samples.append((time.monotonic(), count))
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        await self._task

    def max_between(self, start: float, end: float = float("inf")) -> int:
        return max((n for t, n in self.samples if start <= t <= end), default=0)

    def settled_at(self, limit: int, after: float) -> float | None:
        """First time after `after` from which every sample stays <= limit."""
        settled = None
        for t, n in self.samples:
            if t < after:
                continue
            if n > limit:
                settled = None
            elif settled is None:
                settled = t
        return settled
