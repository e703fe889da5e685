"""poolwarden.threaded on the real PostgreSQL 17 + PgBouncer 1.24, in this process, under
threads: a pool swap under load fails no request, after every swap the *real* connections
(PgBouncer's SHOW CLIENTS, PostgreSQL's pg_stat_activity) come down to the new plan, a bad
plan file keeps the last good plan, and a fork never shares a connection.

The connection counts are read from PgBouncer and PostgreSQL, never from the library's own
counters; the defective swap (naive/naive_swap.py: the old engine disposed while requests
hold it) is measured the same way and must be caught.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import devstack
import pytest
from appserver import write_atomically
from sqlalchemy import create_engine, text

from poolwarden import planfile, threaded

sys.path.insert(0, str(Path(__file__).parent / "naive"))
from naive_swap import NaiveSwap  # noqa: E402

SETTLE_SECONDS = 20.0


def plan(generation: int, pool_size: int, max_overflow: int = 0) -> planfile.PoolPlan:
    return planfile.PoolPlan(pool_size=pool_size, max_overflow=max_overflow,
                             generation=generation, budget="default/app", consumer="flask")


def url(stack: devstack.Stack, *, via_bouncer: bool) -> str:
    return stack.dsn(via_bouncer=via_bouncer).replace("postgresql://", "postgresql+psycopg://")


def factory(stack: devstack.Stack, name: str, *, via_bouncer: bool = True
            ) -> Callable[[planfile.PoolPlan], object]:
    def build(p: planfile.PoolPlan):
        return create_engine(url(stack, via_bouncer=via_bouncer), pool_size=p.pool_size,
                             max_overflow=p.max_overflow, pool_timeout=30, pool_pre_ping=True,
                             connect_args={"application_name": name})
    return build


def bouncer_clients(stack: devstack.Stack, name: str) -> int:
    """Client connections PgBouncer holds for `name` (SHOW CLIENTS)."""
    bouncer = devstack.Bouncer(stack=stack, name="pgbouncer", port=stack.bouncer_port)
    return sum(1 for row in bouncer.show("CLIENTS") if row.get("application_name") == name)


def backends(stack: devstack.Stack, name: str) -> int:
    """PostgreSQL backends of `name` (pg_stat_activity)."""
    return int(stack.psql("SELECT count(*) FROM pg_stat_activity "
                          f"WHERE application_name = '{name}'").strip())


class ThreadLoad:
    """`threads` threads, each running checked queries on a read-only session until stopped."""

    def __init__(self, pools, threads: int = 16, sleep: float = 0.01) -> None:
        self.pools, self.sleep = pools, sleep
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def _run(self, index: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            value = index * 1_000_000 + i
            try:
                with self.pools.readonly_session() as session:
                    answer = session.execute(
                        text("SELECT CAST(:v AS bigint) * 3 + 1, pg_sleep(:s)"),
                        {"v": value, "s": self.sleep}).scalar_one()
                with self._lock:
                    if answer == value * 3 + 1:
                        self.ok += 1
                    else:
                        self.failures.append(f"wrong answer {answer} for {value}")
            except Exception as error:  # noqa: BLE001  (every failure is counted)
                with self._lock:
                    self.failures.append(f"{type(error).__name__}: {error}")

    def __enter__(self) -> ThreadLoad:
        for thread in self._threads:
            thread.start()
        self.wait_for(self.ok + 20)
        return self

    def wait_for(self, ok: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.ok < ok:
            assert time.monotonic() < deadline, f"load stalled at {self.ok}: {self.failures[:5]}"
            time.sleep(0.02)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def settle(count: Callable[[], int], limit: int, *, timeout: float = SETTLE_SECONDS
           ) -> tuple[int, float]:
    """Poll `count()` until it is at most `limit`; returns (last count, seconds taken)."""
    started = time.monotonic()
    while True:
        seen = count()
        if seen <= limit or time.monotonic() - started > timeout:
            return seen, time.monotonic() - started
        time.sleep(0.2)


def swap_under_load(pools, plans: list[planfile.PoolPlan], count: Callable[[], int],
                    *, timeout: float = SETTLE_SECONDS) -> list[tuple[int, int, float]]:
    """Apply each plan under 16 threads of load; after each, wait (bounded) until the real
    connection count is within the plan. Returns (limit, count seen, seconds) per plan."""
    seen = []
    with ThreadLoad(pools) as load:
        for new in plans:
            pools.apply(new)
            load.wait_for(load.ok + 20)  # requests were served on the new pool
            limit = new.pool_size + new.max_overflow
            got, seconds = settle(count, limit, timeout=timeout)
            seen.append((limit, got, seconds))
            load.wait_for(load.ok + 20)
    assert load.failures == [], load.failures[:5]
    return seen


def test_swap_under_threaded_load_fails_nothing_and_bouncer_clients_follow_the_plan(stack):
    name = f"threaded-swap-{os.getpid()}"
    pools = threaded.Pools(factory(stack, name), plan(1, 2))
    try:
        seen = swap_under_load(pools, [plan(2, 6, 2), plan(3, 1), plan(4, 3, 1), plan(5, 1)],
                               lambda: bouncer_clients(stack, name))
        sys.stdout.write(f"limit, SHOW CLIENTS, seconds: {seen}\n")
        for limit, got, _ in seen:
            assert got <= limit, seen
        assert pools.swaps == 4
        assert pools.retired_open() == 0
        # Idle now: exactly the new plan's pool or less is open at PgBouncer.
        assert bouncer_clients(stack, name) <= 1
    finally:
        pools.close()
    assert settle(lambda: bouncer_clients(stack, name), 0)[0] == 0


def test_shrinking_swap_brings_pg_stat_activity_down_to_the_plan(stack):
    name = f"threaded-direct-{os.getpid()}"
    pools = threaded.Pools(factory(stack, name, via_bouncer=False), plan(1, 6))
    try:
        seen = swap_under_load(pools, [plan(2, 1), plan(3, 4), plan(4, 2)],
                               lambda: backends(stack, name))
        sys.stdout.write(f"limit, pg_stat_activity, seconds: {seen}\n")
        for limit, got, _ in seen:
            assert got <= limit, seen
    finally:
        pools.close()


def test_the_measure_catches_a_swap_that_disposes_an_engine_still_in_use(stack):
    """The same scenario with the defective swap: its connections stay open (the issue's
    'SHOW CLIENTS kept 10 instead of 2'), and the measure above sees them."""
    name = f"naive-swap-{os.getpid()}"
    naive = NaiveSwap(factory(stack, name), plan(1, 6))
    try:
        with ThreadLoad(naive) as load:
            naive.apply(plan(2, 1))
            load.wait_for(load.ok + 20)
            got, _ = settle(lambda: bouncer_clients(stack, name), 1, timeout=5)
        sys.stdout.write(f"naive swap 6 -> 1: SHOW CLIENTS {got}\n")
        assert got > 1, "the defective swap must leave connections open at PgBouncer"
    finally:
        naive.close()


def test_plan_file_keep_last_good_one_error_per_problem_and_a_replaced_directory(
        stack, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="poolwarden")
    name = f"threaded-watch-{os.getpid()}"
    plan_file = tmp_path / "plan" / "plan.json"
    write_atomically(plan_file, planfile.render(plan(5, 3)))
    pools = threaded.PlanFollowingEngine(factory(stack, name), plan_file, plan(0, 1))
    try:
        assert pools.current.plan.generation == 5
        with pools.session() as session:
            assert session.execute(text("SELECT 1")).scalar_one() == 1

        write_atomically(plan_file, "{ this is not json")
        time.sleep(1.5)
        write_atomically(plan_file, "{ this is not json either")  # the same problem
        time.sleep(1.5)
        assert (pools.current.plan.generation, pools.current.plan.pool_size) == (5, 3)
        rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(rejected) == 1, rejected
        assert "keeping plan generation 5" in rejected[0]

        write_atomically(plan_file, '{"apiVersion": "poolwarden.io/v1alpha1", "kind": '
                                    '"PoolPlan", "poolSize": 0, "maxOverflow": 0}\n')
        time.sleep(1.5)
        assert pools.current.plan.pool_size == 3
        assert "'poolSize' must be >= 1" in caplog.text

        plan_file.unlink()
        time.sleep(1.5)
        assert pools.current.plan.generation == 5
        assert "disappeared" in caplog.text

        write_atomically(plan_file, planfile.render(plan(6, 4)))
        wait_generation(pools, 6)
        assert pools.current.plan.pool_size == 4

        # The directory removed and made anew (a remount): the watch follows the new one.
        shutil.rmtree(plan_file.parent)
        time.sleep(1.5)
        write_atomically(plan_file, planfile.render(plan(7, 2)))
        wait_generation(pools, 7)
        assert pools.current.plan.pool_size == 2
        assert pools.watcher.running
    finally:
        pools.close()
    assert not pools.watcher.running


def wait_generation(pools, generation: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while pools.current.plan.generation != generation:
        assert time.monotonic() < deadline, pools.current.plan
        time.sleep(0.1)


def backend_in_child(run: Callable[[], int]) -> int:
    """fork(); the child runs `run()` (a backend pid) and reports it through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            os.write(write_end, str(run()).encode())
        except BaseException as error:  # noqa: BLE001
            os.write(write_end, f"error {type(error).__name__}: {error}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    return int(answer)


BACKEND = text("SELECT pg_backend_pid()")


def test_fork_control_a_plain_engine_shares_its_connection_with_the_child(stack):
    """The detector: a plain engine warmed before fork hands the child the parent's very
    connection (the same PostgreSQL backend pid on both sides of the fork)."""
    engine = create_engine(url(stack, via_bouncer=False), pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            parent = conn.execute(BACKEND).scalar_one()

        def child() -> int:
            with engine.connect() as conn:
                return conn.execute(BACKEND).scalar_one()

        assert backend_in_child(child) == parent, "one backend, two processes: shared"
    finally:
        engine.dispose()


def test_fork_guard_refuses_the_parents_connection(stack):
    """SQLAlchemy's checkout guard alone (no dispose after fork): the child gets a backend of
    its own, and the parent's connection still works afterwards."""
    engine = create_engine(url(stack, via_bouncer=False), pool_size=1, max_overflow=0)
    threaded.install_fork_guard(engine)
    try:
        with engine.connect() as conn:
            parent = conn.execute(BACKEND).scalar_one()

        def child() -> int:
            with engine.connect() as conn:
                return conn.execute(BACKEND).scalar_one()

        assert backend_in_child(child) != parent
        with engine.connect() as conn:
            assert conn.execute(BACKEND).scalar_one() == parent  # untouched by the child
    finally:
        engine.dispose()


def test_pools_after_fork_use_a_connection_of_their_own(stack):
    name = f"threaded-fork-{os.getpid()}"
    pools = threaded.Pools(factory(stack, name, via_bouncer=False), plan(1, 1))
    try:
        with pools.lease() as slot, slot.engine.connect() as conn:
            parent = conn.execute(BACKEND).scalar_one()

        def child() -> int:
            with pools.lease() as slot, slot.engine.connect() as conn:
                return conn.execute(BACKEND).scalar_one()

        children = {backend_in_child(child) for _ in range(3)}
        assert parent not in children
        with pools.lease() as slot, slot.engine.connect() as conn:
            assert conn.execute(BACKEND).scalar_one() == parent
    finally:
        pools.close()


@pytest.fixture(autouse=True)
def _no_stray_watch_threads():
    yield
    stray = [t for t in threading.enumerate() if t.name == "poolwarden-planwatch"]
    assert stray == [], stray


def test_a_connection_returned_to_a_retired_engine_is_closed_at_postgres(stack):
    """A connection taken outside any lease (a background job holding `pools.engine`) and
    returned after its engine was replaced: PostgreSQL sees it closed, not pooled forever."""
    name = f"threaded-stray-{os.getpid()}"
    pools = threaded.Pools(factory(stack, name, via_bouncer=False), plan(1, 3))
    try:
        with pools.session() as session:
            session.execute(text("SELECT 1"))
        stray = pools.engine.connect()
        stray.execute(text("SELECT 1"))
        pools.apply(plan(2, 1))
        assert backends(stack, name) == 1  # the idle one closed; the stray is still in use
        stray.close()
        assert settle(lambda: backends(stack, name), 0)[0] == 0
        with pools.session() as session:
            session.execute(text("SELECT 1"))
        assert backends(stack, name) == 1  # the new plan's pool
    finally:
        pools.close()
