"""poolwarden.aio.PlanWatcher: what a plan file change does (real files and a real watch;
real engines that never connect, no server)."""

from __future__ import annotations

import asyncio
import logging
import shutil

import pytest

from poolwarden import aio, planfile
from poolwarden_fastapi_app import config

DEFAULT = planfile.PoolPlan(pool_size=5, max_overflow=0)
SETTINGS = config.Settings(db_host="127.0.0.1", db_port=1, db_password="x")  # never connects


def write(path, plan: planfile.PoolPlan) -> None:
    path.write_text(planfile.render(plan))


def test_no_file_uses_the_defaults_quietly(tmp_path, caplog):
    watcher = aio.PlanWatcher(tmp_path / "plan.json", DEFAULT)
    with caplog.at_level(logging.INFO):
        assert watcher.initial() == DEFAULT
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_valid_file_then_unchanged_bytes_do_nothing(tmp_path):
    path = tmp_path / "plan.json"
    plan = planfile.PoolPlan(pool_size=3, max_overflow=1, generation=2)
    write(path, plan)
    watcher = aio.PlanWatcher(path, DEFAULT)
    assert watcher.initial() == plan
    assert watcher.read() is None  # same bytes: nothing new


def test_bad_file_keeps_last_good_and_logs_once_per_problem(tmp_path, caplog):
    path = tmp_path / "plan.json"
    good = planfile.PoolPlan(pool_size=3, max_overflow=1, generation=2)
    write(path, good)
    watcher = aio.PlanWatcher(path, DEFAULT)
    watcher.initial()
    with caplog.at_level(logging.ERROR):
        path.write_text("{ broken")
        assert watcher.read() is None
        path.write_text("{ broken again")
        assert watcher.read() is None
        path.unlink()
        assert watcher.read() is None
        assert watcher.read() is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors  # one for "not JSON", one for "disappeared"
    assert "rejected" in errors[0] and "keeping plan generation 2" in errors[0]
    assert "disappeared" in errors[1]
    assert watcher.last_good == good

    newer = planfile.PoolPlan(pool_size=4, max_overflow=0, generation=3)
    write(path, newer)
    assert watcher.read() == newer


async def wait_until(predicate, *, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.mark.parametrize("how", ["removed", "renamed away"])
async def test_watch_survives_its_directory_being_replaced(tmp_path, how):
    """The watched directory goes away and comes back (a volume remounted, a directory
    recreated): a plan written into the new directory still swaps the pool (inotify)."""
    directory = tmp_path / "plan"
    directory.mkdir()
    path = directory / "plan.json"
    write(path, planfile.PoolPlan(pool_size=2, max_overflow=0, generation=1))
    watcher = aio.PlanWatcher(path, DEFAULT)
    pools = aio.PlanEngine(aio.engine_factory(SETTINGS.url(), SETTINGS.engine_options()),
                           watcher.initial())
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(pools, stop))
    try:
        write(path, planfile.PoolPlan(pool_size=3, max_overflow=0, generation=2))
        assert await wait_until(lambda: pools.current.plan.generation == 2, timeout=10)

        if how == "removed":
            shutil.rmtree(directory)
        else:
            directory.rename(tmp_path / "plan.old")
        await asyncio.sleep(0.5)  # the watch sees the directory go
        directory.mkdir()
        write(path, planfile.PoolPlan(pool_size=4, max_overflow=1, generation=3))

        assert await wait_until(lambda: pools.current.plan.generation == 3, timeout=10), (
            f"plan in use: {pools.status()}")
        assert pools.current.plan.pool_size == 4 and pools.swaps == 2
        # And the watch is on the new directory: the next change in it is seen too.
        write(path, planfile.PoolPlan(pool_size=1, max_overflow=0, generation=4))
        assert await wait_until(lambda: pools.current.plan.generation == 4, timeout=10), (
            f"plan in use: {pools.status()}")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await pools.close()
