"""The plan file as the kubelet serves a ConfigMap volume (files behind a `..data` symlink that
is swapped atomically), and a plan directory that is removed and created again: every worker
under gunicorn picks up each new plan."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from poolwarden import planfile


def plan(generation: int, pool_size: int) -> planfile.PoolPlan:
    return planfile.PoolPlan(
        pool_size=pool_size,
        max_overflow=0,
        generation=generation,
        budget="default/app",
        consumer="app",
    )


def publish(directory: Path, version: str, new_plan: planfile.PoolPlan) -> None:
    """What the kubelet's atomic writer does: a new timestamped directory, a `..data_tmp`
    symlink to it renamed over `..data`, the user-visible name a symlink through `..data`."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = directory / f"..{version}"
    payload.mkdir()
    (payload / "plan.json").write_text(planfile.render(new_plan))
    tmp = directory / "..data_tmp"
    tmp.symlink_to(payload.name)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    tmp.replace(directory / "..data")
    if not (directory / "plan.json").is_symlink():
        (directory / "plan.json").symlink_to("..data/plan.json")
    if old:
        shutil.rmtree(directory / old)


def test_plan_follows_configmap_swaps_and_a_recreated_directory(start_app):
    app = start_app(workers=2)
    directory = app.plan_file.parent
    publish(directory, "2026_12_01_v1", plan(1, 2))
    assert {p["pool_size"] for p in app.wait_for_plan(1).values()} == {2}

    publish(directory, "2026_12_01_v2", plan(2, 3))  # a ConfigMap update
    assert {p["pool_size"] for p in app.wait_for_plan(2).values()} == {3}

    shutil.rmtree(directory)  # the volume goes away and comes back (a remount)
    publish(directory, "2026_12_01_v3", plan(3, 4))
    assert {p["pool_size"] for p in app.wait_for_plan(3, timeout=20).values()} == {4}
    # The events of the removal may already show the new file; the proof that the watch is
    # on the new directory is the next update in it.
    publish(directory, "2026_12_01_v4", plan(4, 1))
    pools = app.wait_for_plan(4, timeout=20)
    assert {p["pool_size"] for p in pools.values()} == {1}, pools
