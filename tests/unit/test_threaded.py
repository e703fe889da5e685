"""poolwarden.threaded's lease/swap contract on SQLite files (no server; the same contract on
PostgreSQL + PgBouncer, with real connection counts, is tests/integration/test_threaded_pool.py):
an engine in use is never disposed, a retired engine closes every connection returned to it,
and under concurrent leases and swaps every replaced engine ends with no connection open."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import QueuePool

from poolwarden import planfile, threaded


def plan(generation: int, pool_size: int, max_overflow: int = 0) -> planfile.PoolPlan:
    return planfile.PoolPlan(pool_size=pool_size, max_overflow=max_overflow,
                             generation=generation)


def pools_on(path: Path, first: planfile.PoolPlan) -> threaded.Pools:
    url = f"sqlite:///{path}"
    return threaded.Pools(lambda p: create_engine(url, poolclass=QueuePool,
                                                  pool_size=p.pool_size,
                                                  max_overflow=p.max_overflow,
                                                  pool_timeout=30), first)


def test_an_engine_in_use_is_disposed_when_its_last_lease_ends(tmp_path):
    pools = pools_on(tmp_path / "db", plan(1, 2))
    with pools.lease() as old, old.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        assert pools.apply(plan(2, 1))
        assert pools.current is not old and old.retired and not old.disposed
        conn.execute(text("SELECT 1"))  # the request in flight goes on, on its engine
    assert old.disposed and old.open_connections == 0
    assert pools.retired_open() == 0
    assert pools.status()["pool_size"] == 1 and pools.status()["swaps"] == 1
    pools.close()


def test_same_sizes_keep_the_pool_and_take_the_generation(tmp_path):
    pools = pools_on(tmp_path / "db", plan(1, 2))
    slot = pools.current
    assert not pools.apply(plan(2, 2))
    assert pools.current is slot and slot.plan.generation == 2 and pools.swaps == 0
    pools.close()


def test_a_connection_returned_to_a_retired_engine_is_closed(tmp_path):
    pools = pools_on(tmp_path / "db", plan(1, 2))
    stray = pools.current.engine.connect()  # taken outside any lease
    stray.execute(text("SELECT 1"))
    old = pools.current
    pools.apply(plan(2, 3))
    assert old.disposed and old.open_connections == 1  # still in use: not closed under it
    assert pools.retired_open() == 1
    stray.close()  # back to the retired engine: closed, not pooled
    assert old.open_connections == 0
    assert pools.retired_open() == 0
    pools.close()


def test_concurrent_leases_and_swaps_leave_no_retired_connection_open(tmp_path):
    pools = pools_on(tmp_path / "db", plan(1, 2))
    slots: set[threaded.Slot] = set()
    failures: list[str] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                with pools.session() as session:
                    assert session.execute(text("SELECT 1")).scalar_one() == 1
            except Exception as error:  # noqa: BLE001
                failures.append(repr(error))

    workers = [threading.Thread(target=work) for _ in range(8)]
    for thread in workers:
        thread.start()
    for generation in range(2, 40):
        slots.add(pools.current)
        pools.apply(plan(generation, 1 + generation % 4, generation % 2))
    stop.set()
    for thread in workers:
        thread.join()
    assert failures == []
    assert pools.swaps == 38
    retired = slots - {pools.current}
    assert all(s.disposed and s.open_connections == 0 for s in retired)
    assert pools.retired_open() == 0
    pools.close()
    assert pools.current.open_connections == 0
