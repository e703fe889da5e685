"""app.planwatch.PlanWatcher.read: what a plan file change does (real files, no server)."""

from __future__ import annotations

import logging

from app import planwatch
from poolwarden import planfile

DEFAULT = planfile.PoolPlan(pool_size=5, max_overflow=0)


def write(path, plan: planfile.PoolPlan) -> None:
    path.write_text(planfile.render(plan))


def test_no_file_uses_the_defaults_quietly(tmp_path, caplog):
    watcher = planwatch.PlanWatcher(tmp_path / "plan.json", DEFAULT)
    with caplog.at_level(logging.INFO):
        assert watcher.initial() == DEFAULT
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_valid_file_then_unchanged_bytes_do_nothing(tmp_path):
    path = tmp_path / "plan.json"
    plan = planfile.PoolPlan(pool_size=3, max_overflow=1, generation=2)
    write(path, plan)
    watcher = planwatch.PlanWatcher(path, DEFAULT)
    assert watcher.initial() == plan
    assert watcher.read() is None  # same bytes: nothing new


def test_bad_file_keeps_last_good_and_logs_once_per_problem(tmp_path, caplog):
    path = tmp_path / "plan.json"
    good = planfile.PoolPlan(pool_size=3, max_overflow=1, generation=2)
    write(path, good)
    watcher = planwatch.PlanWatcher(path, DEFAULT)
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
