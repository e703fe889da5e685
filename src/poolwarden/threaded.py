"""The plan-following SQLAlchemy `Engine` for threaded (sync) apps: psycopg 3, gunicorn gthread.

`Pools` holds the current engine. Every request leases it for the request's lifetime. A new
plan builds a new engine and makes it current at once: new requests use it, requests in
flight finish on the old one, and the old engine is disposed (its connections closed) as
soon as its last lease ends. A connection returned to a retired engine is closed on its
return, never kept in a pool nobody uses any more. Everything here is thread-safe.

`PlanWatcher` watches the plan file's directory in a daemon thread (`watchfiles.watch`,
stopped by a `threading.Event`) and applies every new valid plan; a bad file keeps the last
good plan and logs one error per distinct problem (`poolwarden.planreader`).

`PlanFollowingEngine` is both in one object, what an app holds::

    pools = PlanFollowingEngine(lambda plan: create_engine(url, pool_size=plan.pool_size,
                                                           max_overflow=plan.max_overflow),
                                plan_file, default=PoolPlan(pool_size=5, max_overflow=0))
    with pools.session() as session:   # commits, or rolls back on an exception
        ...

Fork safety (gunicorn `--preload`): every engine built here refuses, at checkout, a pooled
connection created in another process (SQLAlchemy's documented checkout guard), and
`after_fork()` (run it in each child: `poolwarden.gunicorn.post_fork` does) drops the
inherited pools without touching their connections (`Engine.dispose(close=False)`) and starts
the plan watch again in the child, where the parent's thread does not exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import watchfiles
    from sqlalchemy import event, exc, text
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker
    from sqlalchemy.pool import ConnectionPoolEntry
except ImportError as error:  # pragma: no cover (the packaging tier checks the message)
    raise ImportError(f"poolwarden.threaded needs the sync extra: pip install 'poolwarden[sync]' "
                      f"({error})") from error

from poolwarden import planfile, planreader, poolstatus

log = logging.getLogger("poolwarden.threaded")

_PID_KEY = "poolwarden_pid"
_LIVE: weakref.WeakSet[Pools] = weakref.WeakSet()
_WATCHERS: weakref.WeakSet[PlanWatcher] = weakref.WeakSet()
_GUARDED: weakref.WeakSet[Engine] = weakref.WeakSet()


def install_fork_guard(engine: Engine) -> None:
    """Refuse, at checkout, a pooled connection that another process created.

    SQLAlchemy's recipe ("Using Connection Pools with Multiprocessing or os.fork()"): the pid
    is recorded when the connection is made; a checkout in another pid drops the record's
    connection without closing it (it is the other process's) and raises DisconnectionError,
    upon which the pool makes a fresh connection for this process. Idempotent.
    """
    if engine in _GUARDED:
        return
    _GUARDED.add(engine)

    @event.listens_for(engine, "connect")
    def _remember_pid(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_PID_KEY] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _refuse_foreign(dbapi_connection: Any, record: ConnectionPoolEntry,
                        proxy: Any) -> None:
        pid = os.getpid()
        owner = record.info.get(_PID_KEY, pid)
        if owner != pid:
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError(
                f"connection record belongs to pid {owner}, attempting to check out in pid {pid}")


@dataclasses.dataclass(eq=False)
class Slot:
    """One engine built for one plan, how many requests lease it, how many connections it has
    open right now (counted by the pool's own connect/close events)."""

    engine: Engine
    plan: planfile.PoolPlan
    sessionmaker: sessionmaker[Session]
    leases: int = 0
    open_connections: int = 0
    retired: bool = False
    disposed: bool = False


def same_size(a: planfile.PoolPlan, b: planfile.PoolPlan) -> bool:
    return (a.pool_size, a.max_overflow) == (b.pool_size, b.max_overflow)


class Pools:
    """The current engine of this process and its live replacement (the pool swap)."""

    def __init__(self, engine_factory: Callable[[planfile.PoolPlan], Engine],
                 plan: planfile.PoolPlan) -> None:
        self._factory = engine_factory
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._retired: set[Slot] = set()  # replaced, connections still open
        self.swaps = 0
        self.observer: Any = None
        """Told the `/pool` dict whenever the plan in use changes (`observe_pool(status)`, e.g.
        `poolwarden.metrics.PoolMetrics`): each worker publishes its own generation."""
        self._current = self._slot(plan)
        _LIVE.add(self)

    def _slot(self, plan: planfile.PoolPlan) -> Slot:
        engine = self._factory(plan)
        install_fork_guard(engine)
        slot = Slot(engine=engine, plan=plan,
                    sessionmaker=sessionmaker(engine, expire_on_commit=False))
        lock = threading.Lock()

        @event.listens_for(engine, "connect")
        def _opened(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            with lock:
                slot.open_connections += 1

        @event.listens_for(engine, "close")
        def _closed(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            with lock:
                slot.open_connections -= 1

        @event.listens_for(engine, "checkin")
        def _close_if_retired(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            # A connection returned to a replaced engine is closed, not pooled: nothing would
            # ever use it again, and it would hold a PgBouncer client slot (and, in session
            # mode or directly, a PostgreSQL backend) for as long as the process lives.
            if slot.retired and dbapi_connection is not None:
                record.invalidate()

        return slot

    @property
    def current(self) -> Slot:
        return self._current

    @property
    def engine(self) -> Engine:
        """The current engine (lease it for a request: `lease()`)."""
        return self._current.engine

    @contextlib.contextmanager
    def lease(self) -> Iterator[Slot]:
        """The current slot, kept alive (not disposed) until the caller is done with it."""
        if self._pid != os.getpid():
            self.after_fork()
        with self._lock:
            slot = self._current
            slot.leases += 1
        try:
            yield slot
        finally:
            with self._lock:
                slot.leases -= 1
                dispose = slot.retired and slot.leases == 0 and not slot.disposed
                if dispose:
                    slot.disposed = True
            if dispose:
                self._dispose(slot)

    def observe(self) -> None:
        """Tell the observer how the pool is now (nothing without one)."""
        if self.observer is not None:
            self.observer.observe_pool(self.status())

    def apply(self, plan: planfile.PoolPlan) -> bool:
        """Make `plan` current. Returns True when the pool was replaced (size changed)."""
        try:
            return self._apply(plan)
        finally:
            self.observe()

    def _apply(self, plan: planfile.PoolPlan) -> bool:
        with self._lock:
            old = self._current
            if same_size(old.plan, plan):
                old.plan = plan  # a new generation with the same sizes: nothing to rebuild
                return False
        new = self._slot(plan)  # outside the lock: requests keep leasing the old one meanwhile
        with self._lock:
            old = self._current
            self._current = new
            self.swaps += 1
            old.retired = True
            self._retired.add(old)
            dispose = old.leases == 0 and not old.disposed
            if dispose:
                old.disposed = True
        log.info("pool swapped: pool_size %d -> %d, max_overflow %d -> %d (plan generation %d)",
                 old.plan.pool_size, plan.pool_size, old.plan.max_overflow, plan.max_overflow,
                 plan.generation)
        if dispose:
            self._dispose(old)
        return True

    def _dispose(self, slot: Slot) -> None:
        try:
            slot.engine.dispose()  # closes the idle connections; those in use close on return
        finally:
            if slot.open_connections <= 0:
                with self._lock:
                    self._retired.discard(slot)
        log.info("old pool (pool_size %d) disposed: its connections are closed",
                 slot.plan.pool_size)

    def retired_open(self) -> int:
        """Replaced engines that still have a connection open (by the pools' own events)."""
        with self._lock:
            for slot in [s for s in self._retired if s.disposed and s.open_connections <= 0]:
                self._retired.discard(slot)
            return len(self._retired)

    def status(self) -> dict[str, object]:
        """What /pool reports for this process."""
        slot = self._current
        return poolstatus.pool_status(slot.plan, slot.engine.pool, swaps=self.swaps,
                                      retired_open=self.retired_open())

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the leased engine: committed at the end, rolled back on an error."""
        with self.lease() as slot, slot.sessionmaker() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextlib.contextmanager
    def readonly_session(self) -> Iterator[Session]:
        """A session in a READ ONLY transaction, always rolled back at the end."""
        with self.lease() as slot, slot.sessionmaker() as session:
            session.execute(text("SET TRANSACTION READ ONLY"))
            try:
                yield session
            finally:
                session.rollback()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's pools without touching their connections.

        The lock is new (a parent thread may have held it at fork time), every engine's pool
        is replaced by an empty one (`dispose(close=False)`: the parent keeps its
        connections, the child makes its own), retired engines are the parent's business.
        """
        with _FORK_LOCK:
            if self._pid == os.getpid():
                return
            self._reset_in_child()

    def _reset_in_child(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        for slot in (self._current, *self._retired):
            slot.engine.dispose(close=False)
            slot.open_connections = 0
            slot.leases = 0
        self._retired = set()

    def release(self) -> None:
        """Close the idle connections of this process's engines; the pools stay usable (a
        gunicorn master, once the app is loaded: its workers have their own)."""
        with self._lock:
            slots = [self._current, *self._retired]
        for slot in slots:
            slot.engine.pool.dispose()

    def close(self) -> None:
        """Dispose every engine (the process is stopping)."""
        with self._lock:
            slots = [self._current, *self._retired]
        for slot in slots:
            slot.engine.dispose()


class PlanWatcher(planreader.PlanReader):
    """A PlanReader that applies every new valid plan to `pools`, from a daemon thread."""

    def __init__(self, path: Path, default: planfile.PoolPlan, *, poll: bool = False) -> None:
        super().__init__(path, default)
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pools: Pools | None = None  # set by start(): this watch is wanted (also in a child)
        self._pid = os.getpid()
        _WATCHERS.add(self)

    @property
    def wanted(self) -> bool:
        """True once started (and not stopped): a forked child should watch as well."""
        return self._pools is not None

    @property
    def running(self) -> bool:
        """The watch thread runs in this process (threads do not survive fork)."""
        return (self._pid == os.getpid() and self._thread is not None
                and self._thread.is_alive())

    def start(self, pools: Pools) -> None:
        """Start the watch thread (idempotent; in a forked child it starts a new one)."""
        with _FORK_LOCK:
            if self._pid != os.getpid():  # the parent's thread and event do not exist here
                self._pid, self._thread, self._stop = os.getpid(), None, threading.Event()
            self._pools = pools
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, args=(pools, self._stop),
                                            name="poolwarden-planwatch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._pools = None
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout)
        self._thread = None

    def resume(self) -> None:
        """Start the watch here if it is wanted and not running in this process (a child)."""
        pools = self._pools
        if pools is not None and not self.running:
            self.start(pools)

    def run(self, pools: Pools, stop: threading.Event) -> None:
        """Apply plan changes until `stop` is set; a failing watch restarts after a pause."""
        directory = self.path.parent
        while not stop.is_set():
            try:
                watched = planreader.directory_identity(directory)
                if watched is not None:
                    self._watch(pools, stop, directory, watched)
                    continue  # the directory was replaced: watch the new one at once
                self.problem(f"plan directory {directory} does not exist")
            except Exception as exc:  # noqa: BLE001  (the watch must outlive any one failure)
                self.problem(f"watching {directory} failed: {type(exc).__name__}: {exc}")
            stop.wait(planreader.RETRY_SECONDS)

    def _watch(self, pools: Pools, stop: threading.Event, directory: Path,
               watched: tuple[int, int]) -> None:
        """Apply changes until `stop` is set or the path names another directory or none.

        After every event, and every RECHECK_MS without one, the watch ends when the
        directory was deleted or the path names another directory or none (planreader).
        """
        self._apply(pools)  # catch up on anything written before the watch
        for changes in watchfiles.watch(
                directory, stop_event=stop, force_polling=self.poll, poll_delay_ms=500,
                debounce=200, step=50, rust_timeout=planreader.RECHECK_MS, yield_on_timeout=True,
                ignore_permission_denied=True, raise_interrupt=False):
            self._apply(pools)
            if planreader.directory_replaced(changes, directory, watched):
                log.warning("plan directory %s was replaced or removed: watching it anew",
                            directory)
                return

    def _apply(self, pools: Pools) -> None:
        plan = self.read()
        if plan is not None:
            replaced = pools.apply(plan)
            log.info("plan generation %d in use (pool_size=%d, max_overflow=%d%s)",
                     plan.generation, plan.pool_size, plan.max_overflow,
                     "" if replaced else ", same sizes: pool kept")


class PlanFollowingEngine(Pools):
    """`Pools` that follows a plan file by itself: what a threaded app holds.

    The initial plan is the file's (or `default` when there is none yet). The watch thread
    starts at once, or with `lazy=True` at the first `ensure_watching()` of each process: the
    Flask extension calls it before every request, poolwarden.gunicorn's hooks in every
    worker, so a gunicorn master that imports the app with `--preload` (and may use the pool
    there, to create a schema) runs no watch thread and forks none. `close()` stops the
    watch and disposes every engine.
    """

    def __init__(self, engine_factory: Callable[[planfile.PoolPlan], Engine],
                 plan_file: Path | str, default: planfile.PoolPlan, *, poll: bool = False,
                 lazy: bool = False) -> None:
        self.watcher = PlanWatcher(Path(plan_file), default, poll=poll)
        self._want_watch = True
        super().__init__(engine_factory, self.watcher.initial())
        if not lazy:
            self.start()

    def start(self) -> None:
        """Watch the plan file in this process (idempotent), and publish the plan in use."""
        self._want_watch = True
        self.watcher.start(self)
        self.observe()

    def ensure_watching(self) -> None:
        """Start the watch in this process unless it runs (cheap: call it per request)."""
        if self._want_watch and not self.watcher.running:
            self.start()

    def after_fork(self) -> None:
        super().after_fork()
        self.ensure_watching()

    def close(self) -> None:
        self._want_watch = False
        self.watcher.stop()
        super().close()


def after_fork() -> None:
    """In a forked child (gunicorn `post_fork`): every `Pools` of this process drops the
    parent's connections untouched, and every plan watch that ran (or is wanted) in the
    parent runs here. Idempotent; the pools part also runs by itself right after any fork."""
    for pools in list(_LIVE):
        pools.after_fork()
    start_watching()


def release_all() -> None:
    """Close the idle pooled connections of every `Pools` of this process (gunicorn
    `when_ready`: the master, which imported the app with --preload, serves no request)."""
    for pools in list(_LIVE):
        if pools._pid == os.getpid():
            pools.release()


def start_watching() -> None:
    """Start, in this process, every plan watch that is wanted and not running here
    (gunicorn `post_worker_init`: the app was loaded in the worker, or in the master)."""
    for pools in list(_LIVE):
        if isinstance(pools, PlanFollowingEngine):
            pools.ensure_watching()
    for watcher in list(_WATCHERS):
        watcher.resume()


def _at_fork_in_child() -> None:
    """Right after fork, in the child, before any other thread exists: new locks, and no
    pool that holds the parent's connections. (Threads do not survive fork: the plan watch
    starts again from `after_fork()`, `start_watching()` or the next lease.)"""
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()
    for pools in list(_LIVE):
        if pools._pid != os.getpid():
            pools._reset_in_child()


_FORK_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_at_fork_in_child)
