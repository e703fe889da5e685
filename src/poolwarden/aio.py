"""The plan-following SQLAlchemy `AsyncEngine` (asyncpg): one per process, resized live.

`PlanEngine` holds the current engine, built for the current plan. Every request leases it
for the request's lifetime. A new plan builds a new engine and makes it current at once: new
requests use it, requests in flight finish on the old one, and the old engine is disposed as
soon as its last lease ends. A connection given back to a retired pool (one taken outside a
lease, by a background task say) is closed on its way back, never kept: a retired pool holds
no connection once its last one has come back. `PlanWatcher` watches the plan file (built on
`poolwarden.planreader`) and applies every new valid plan; `follow` runs both for a block::

    factory = aio.engine_factory("postgresql+asyncpg://app:pw@pgbouncer:6432/app")
    async with aio.follow(factory, plan_file="/etc/poolwarden/plan/plan.json") as engine:
        async with engine.session() as session:
            ...

Build the engine in each worker (in an ASGI lifespan), never before a server forks.

Prepared statements behind PgBouncer's transaction mode are decided in `EngineOptions`:
``statement_cache=True`` keeps asyncpg's statement cache (correct with PgBouncer >= 1.21 and
``max_prepared_statements`` > 0, or with no PgBouncer); ``False`` turns both caches off and
gives every statement a unique name (older PgBouncer, or ``max_prepared_statements = 0``).

Needs the ``async`` extra: ``pip install 'poolwarden[async]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

try:
    import watchfiles
    from sqlalchemy import URL, event, exc, make_url, text
    from sqlalchemy.ext.asyncio import (
        AsyncEngine,
        AsyncSession,
        async_sessionmaker,
        create_async_engine,
    )
    from sqlalchemy.pool import NullPool
except ImportError as error:  # pragma: no cover (the packaging tier checks the message)
    raise ImportError(f"poolwarden.aio needs the async extra: pip install 'poolwarden[async]' "
                      f"({error})") from error

from poolwarden import planfile, planreader, poolstatus

log = logging.getLogger("poolwarden.aio")
DEFAULT_PLAN_FILE = Path("/etc/poolwarden/plan/plan.json")
"""Where the chart mounts a consumer's plan (`POOLWARDEN_PLAN_FILE` overrides it)."""


class PoolObserver(Protocol):
    """What a metrics sink (`poolwarden.metrics.PoolMetrics`) is told; any object will do."""

    def observe_pool(self, status: dict[str, object]) -> None: ...

    def observe_checkout(self, seconds: float, *, timed_out: bool) -> None: ...


# -- building one engine for one plan --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Everything about an engine that the plan does not decide."""

    pool_timeout: float = 2.0
    """seconds a request waits for a pooled connection before `sqlalchemy.exc.TimeoutError`"""
    pool_recycle: int = 1800
    pool_pre_ping: bool = True
    null_pool: bool = False
    """a new connection per session (for comparison only: the plan's sizes are ignored)"""
    statement_cache: bool = True
    instance: str = dataclasses.field(default_factory=socket.gethostname)
    """the pod's name: each connection's application_name is `<instance>/<pid>`"""
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
    jit: bool | None = False
    """PostgreSQL JIT for these sessions (None: the server's setting). Behind PgBouncer, set
    it for the role (ALTER ROLE ... SET jit = off): PgBouncer drops it."""
    slow_query_seconds: float = 0.0
    """log every statement slower than this (0: never)"""
    engine_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    """anything else for `create_async_engine`"""


def application_name(instance: str) -> str:
    """`<instance>/<pid>`: which pod and which worker a server connection belongs to."""
    pid = str(os.getpid())
    return f"{instance[:62 - len(pid)]}/{pid}"  # PostgreSQL keeps 63 bytes


def unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def connect_args(options: EngineOptions) -> dict[str, object]:
    """asyncpg's connect arguments: timeouts, startup parameters, the statement cache."""
    server_settings = {"application_name": application_name(options.instance)}
    if options.jit is not None:
        server_settings["jit"] = "on" if options.jit else "off"
    args: dict[str, object] = {
        "timeout": options.connect_timeout,
        "command_timeout": options.command_timeout,
        "server_settings": server_settings,
    }
    if not options.statement_cache:
        args.update(statement_cache_size=0, prepared_statement_cache_size=0,
                    prepared_statement_name_func=unique_statement_name)
    return args


def build_engine(url: str | URL, plan: planfile.PoolPlan,
                 options: EngineOptions | None = None) -> AsyncEngine:
    """An engine whose pool has the plan's size; the rest from `options`."""
    options = options or EngineOptions()
    pool_args: dict[str, object]
    if options.null_pool:
        pool_args = {"poolclass": NullPool}
    else:
        pool_args = {
            "pool_size": plan.pool_size,
            "max_overflow": plan.max_overflow,
            "pool_timeout": options.pool_timeout,
            "pool_recycle": options.pool_recycle,
            "pool_pre_ping": options.pool_pre_ping,
            "pool_use_lifo": True,  # idle connections beyond need age out at PgBouncer
        }
    engine = create_async_engine(make_url(url), connect_args=connect_args(options),
                                 **pool_args, **options.engine_args)
    install_slow_query_log(engine, threshold=options.slow_query_seconds)
    return engine


def engine_factory(url: str | URL, options: EngineOptions | None = None
                   ) -> Callable[[planfile.PoolPlan], AsyncEngine]:
    """What `PlanEngine` calls for every new plan."""
    return functools.partial(build_engine, url, options=options)


def install_slow_query_log(engine: AsyncEngine, *, threshold: float) -> None:
    """Log every statement slower than `threshold` seconds, with its duration."""
    if threshold <= 0:
        return
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        conn.info["poolwarden_query_start"] = time.perf_counter()

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _end(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        elapsed = time.perf_counter() - conn.info.get("poolwarden_query_start", time.perf_counter())
        if elapsed >= threshold:
            log.warning("slow query: %.3fs (threshold %.3fs): %s",
                        elapsed, threshold, " ".join(statement.split())[:300])


# -- the engine that follows the plan ---------------------------------------------------------

@dataclasses.dataclass(eq=False)
class Slot:
    """One engine built for one plan, and who is using it."""

    engine: AsyncEngine
    plan: planfile.PoolPlan
    sessionmaker: async_sessionmaker[AsyncSession]
    leases: int = 0
    out: set[int] = dataclasses.field(default_factory=set)
    """the pool entries (by id) out of this engine's pools now, kept by pool events"""
    retired: bool = False
    disposed: bool = False

    @property
    def checked_out(self) -> int:
        return len(self.out)

    @property
    def open(self) -> bool:
        """A retired slot is open until it is disposed and every connection came back."""
        return not self.disposed or bool(self.out)


def same_size(a: planfile.PoolPlan, b: planfile.PoolPlan) -> bool:
    return (a.pool_size, a.max_overflow) == (b.pool_size, b.max_overflow)


class PlanEngine:
    """This process's current engine, leased per request and swapped in place."""

    def __init__(self, engine_factory: Callable[[planfile.PoolPlan], AsyncEngine],
                 plan: planfile.PoolPlan, *, observer: PoolObserver | None = None) -> None:
        self._factory = engine_factory
        self.observer = observer
        self._disposing: set[asyncio.Task[None]] = set()
        self._retired: set[Slot] = set()  # replaced, still open until their last lease ends
        self.swaps = 0
        self._current = self._slot(plan)

    def _slot(self, plan: planfile.PoolPlan) -> Slot:
        engine = self._factory(plan)
        slot = Slot(engine=engine, plan=plan,
                    sessionmaker=async_sessionmaker(engine, expire_on_commit=False))
        # Engine-level pool events follow the pool across dispose() (the recreated pool
        # keeps the listeners), and also fire for a pool the engine no longer points at.
        event.listen(engine.sync_engine, "checkout", functools.partial(self._checked_out, slot))
        event.listen(engine.sync_engine, "checkin", functools.partial(self._checked_in, slot))
        return slot

    @staticmethod
    def _checked_out(slot: Slot, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        slot.out.add(id(record))

    def _checked_in(self, slot: Slot, dbapi_connection: Any, record: Any) -> None:
        slot.out.discard(id(record))
        if slot.retired and dbapi_connection is not None:
            # Given back to a retired pool: close it instead of keeping it (an orphaned
            # pool would hold it open for as long as the pool object lives).
            record.invalidate()
        if slot.retired and not slot.open:
            self._retired.discard(slot)

    @property
    def current(self) -> Slot:
        return self._current

    @property
    def plan(self) -> planfile.PoolPlan:
        return self._current.plan

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Slot]:
        """The current slot, kept alive until the caller is done with it."""
        slot = self._current
        slot.leases += 1
        try:
            yield slot
        finally:
            slot.leases -= 1
            if slot.retired and slot.leases == 0:
                self._dispose_later(slot)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session on the current engine, leased for the block (commit it yourself)."""
        async with self.lease() as slot, slot.sessionmaker() as session:
            yield session

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        """An `AsyncConnection` on the current engine, leased for the block."""
        async with self.lease() as slot, slot.engine.connect() as conn:
            yield conn

    async def checkout(self, session: AsyncSession) -> None:
        """Take the session's pooled connection now, timing the wait (pool_timeout bounds it)
        and telling the observer."""
        started = time.perf_counter()
        timed_out = False
        try:
            await session.connection()
        except exc.TimeoutError:
            timed_out = True
            raise
        finally:
            if self.observer is not None:
                self.observer.observe_checkout(time.perf_counter() - started,
                                               timed_out=timed_out)
                self.observer.observe_pool(self.status())

    async def apply(self, plan: planfile.PoolPlan) -> bool:
        """Make `plan` current. Returns True when the pool was replaced (size changed)."""
        old = self._current
        if same_size(old.plan, plan):
            old.plan = plan  # a new generation with the same sizes: nothing to rebuild
            self.observe()
            return False
        self._current = self._slot(plan)
        self.swaps += 1
        old.retired = True
        self._retired.add(old)
        log.info("pool swapped: pool_size %d -> %d, max_overflow %d -> %d (plan generation %d)",
                 old.plan.pool_size, plan.pool_size, old.plan.max_overflow, plan.max_overflow,
                 plan.generation)
        if old.leases == 0:
            self._dispose_later(old)
        self.observe()
        return True

    def _dispose_later(self, slot: Slot) -> None:
        task = asyncio.get_running_loop().create_task(self._dispose(slot))
        self._disposing.add(task)
        task.add_done_callback(self._disposing.discard)

    async def _dispose(self, slot: Slot) -> None:
        if slot.disposed:
            return
        slot.disposed = True
        await slot.engine.dispose()
        if not slot.open:
            self._retired.discard(slot)
        log.info("old pool (pool_size %d) disposed: its connections are closed%s",
                 slot.plan.pool_size,
                 f" ({slot.checked_out} still out, closed as they come back)"
                 if slot.checked_out else "")

    async def close(self) -> None:
        """Dispose everything (lifespan shutdown)."""
        if self._disposing:
            await asyncio.gather(*self._disposing, return_exceptions=True)
        await self._current.engine.dispose()

    def status(self) -> dict[str, object]:
        """What /pool reports for this process."""
        return poolstatus.pool_status(self._current.plan, self._current.engine.pool,
                                      swaps=self.swaps, retired_open=len(self._retired))

    def observe(self) -> None:
        """Tell the observer (metrics) how the pool is now."""
        if self.observer is not None:
            self.observer.observe_pool(self.status())


# -- watching the plan file -------------------------------------------------------------------

class PlanWatcher(planreader.PlanReader):
    """A PlanReader that applies every new valid plan to a `PlanEngine` (asyncio).

    The directory is watched, not the file (the kubelet swaps a ConfigMap's files by a
    symlink); a directory removed and recreated (or remounted) is watched anew.
    """

    def __init__(self, path: Path | str, default: planfile.PoolPlan, *,
                 poll: bool = False) -> None:
        super().__init__(Path(path), default)
        self.poll = poll

    async def run(self, engine: PlanEngine, stop: asyncio.Event) -> None:
        """Apply plan changes until `stop` is set; a failing watch restarts after a pause."""
        directory = self.path.parent
        while not stop.is_set():
            try:
                watched = planreader.directory_identity(directory)
                if watched is not None:
                    await self._watch(engine, stop, directory, watched)
                    continue  # the directory was replaced: watch the new one at once
                self.problem(f"plan directory {directory} does not exist")
            except Exception as exc:  # noqa: BLE001  (the watch must outlive any one failure)
                self.problem(f"watching {directory} failed: {type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=planreader.RETRY_SECONDS)
            except TimeoutError:
                pass

    async def _watch(self, engine: PlanEngine, stop: asyncio.Event, directory: Path,
                     watched: tuple[int, int]) -> None:
        """Apply changes until `stop` is set or the path names another directory or none
        (checked after every event and every RECHECK_MS without one)."""
        await self._apply(engine)  # catch up on anything written before the watch
        async for changes in watchfiles.awatch(
                directory, stop_event=stop, force_polling=self.poll, poll_delay_ms=500,
                debounce=200, step=50, rust_timeout=planreader.RECHECK_MS, yield_on_timeout=True,
                ignore_permission_denied=True):
            await self._apply(engine)
            if planreader.directory_replaced(changes, directory, watched):
                log.warning("plan directory %s was replaced or removed: watching it anew",
                            directory)
                return

    async def _apply(self, engine: PlanEngine) -> None:
        plan = self.read()
        if plan is not None:
            replaced = await engine.apply(plan)
            log.info("plan generation %d in use (pool_size=%d, max_overflow=%d%s)",
                     plan.generation, plan.pool_size, plan.max_overflow,
                     "" if replaced else ", same sizes: pool kept")


def plan_file_from_env() -> Path:
    return Path(os.environ.get("POOLWARDEN_PLAN_FILE") or DEFAULT_PLAN_FILE)


@contextlib.asynccontextmanager
async def follow(engine_factory: Callable[[planfile.PoolPlan], AsyncEngine], *,
                 plan_file: Path | str | None = None,
                 default: planfile.PoolPlan | None = None, poll: bool = False,
                 observer: PoolObserver | None = None) -> AsyncIterator[PlanEngine]:
    """A `PlanEngine` that follows `plan_file` for the block, then is disposed.

    Until a plan file exists the pool has `default`'s sizes (5, no overflow unless given).
    `plan_file` defaults to `$POOLWARDEN_PLAN_FILE`, else the chart's mount path.
    """
    watcher = PlanWatcher(plan_file or plan_file_from_env(),
                          default or planfile.PoolPlan(pool_size=5, max_overflow=0), poll=poll)
    engine = PlanEngine(engine_factory, watcher.initial(), observer=observer)
    engine.observe()
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(engine, stop))
    try:
        yield engine
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=5)
        await engine.close()


# -- waiting for the database ------------------------------------------------------------------

async def when_reachable(engine: PlanEngine, work: Callable[[Any], Awaitable[object]], *,
                         what: str = "startup work", retry_max: float = 2.0) -> None:
    """Run `work(connection)` in a transaction as soon as the database answers; retry until.

    A worker must not die because PostgreSQL is still starting: it stays alive and unready
    until this returns. Every attempt leases the current engine (a swap meanwhile is safe).
    """
    delay, last = 0.1, ""
    while True:
        try:
            async with engine.lease() as slot, slot.engine.begin() as conn:
                await work(conn)
            return
        except (OSError, TimeoutError, exc.SQLAlchemyError) as error:
            problem = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if problem != last:  # one line per distinct problem, not one per retry
                log.warning("database not reachable yet, %s not done; retrying: %s", what,
                            problem)
                last = problem
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)


async def create_all_when_reachable(engine: PlanEngine, metadata: Any, *,
                                    lock_id: int | None = None, retry_max: float = 2.0) -> None:
    """`metadata.create_all` once the database answers; with `lock_id`, workers starting
    together serialize on that transaction-level advisory lock."""

    async def create(conn: Any) -> None:
        if lock_id is not None:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_id})
        await conn.run_sync(metadata.create_all)

    await when_reachable(engine, create, what="schema", retry_max=retry_max)
