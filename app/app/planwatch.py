"""Watching the plan file and applying each new valid plan to this worker's pool.

The plan file is a mounted ConfigMap: the kubelet replaces it atomically (a symlink swap in
the directory), so the directory is watched, not the file. Every change re-reads the file;
unchanged bytes do nothing. A missing, unparsable or invalid file keeps the last good plan
and logs one error per distinct problem (not one per event). A directory removed and
recreated (or remounted) is watched anew: a watch never stays on a directory that is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import watchfiles

from app import pool
from poolwarden import planfile

log = logging.getLogger("app.planwatch")
RECHECK_MS = 1000  # how often a quiet watch checks that its directory is still the one named


def directory_identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory the path names now; None when it names none."""
    try:
        st = directory.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class PlanWatcher:
    def __init__(self, path: Path, default: planfile.PoolPlan, *, poll: bool = False) -> None:
        self.path = path
        self.default = default
        self.poll = poll
        self.last_good: planfile.PoolPlan = default
        self._last_bytes: bytes | None = None
        self._last_problem: str | None = None

    def read(self) -> planfile.PoolPlan | None:
        """The plan to use now, or None when the file brings nothing new."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if self._last_bytes is None:
                return None  # never had a file: the defaults are the plan, nothing to report
            self._problem(f"plan file {self.path} disappeared")
            return None
        except OSError as exc:
            self._problem(f"plan file {self.path} cannot be read: {exc}")
            return None
        if data == self._last_bytes:
            return None
        self._last_bytes = data
        try:
            plan = planfile.parse(data)
        except planfile.PlanFileError as exc:
            self._problem(f"plan file {self.path} rejected: {exc}")
            return None
        self._last_problem = None
        self.last_good = plan
        return plan

    def initial(self) -> planfile.PoolPlan:
        plan = self.read()
        if plan is None and self._last_bytes is None:
            log.info("no plan file at %s yet: pool_size=%d max_overflow=%d from the settings",
                     self.path, self.default.pool_size, self.default.max_overflow)
        return plan or self.last_good

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            log.error("%s; keeping plan generation %d (pool_size=%d, max_overflow=%d). "
                      "Fix or rewrite the file (format: poolwarden.planfile).", message,
                      self.last_good.generation, self.last_good.pool_size,
                      self.last_good.max_overflow)
            self._last_problem = message

    async def run(self, pools: pool.Pools, stop: asyncio.Event) -> None:
        """Apply plan changes until `stop` is set; a failing watch restarts after a pause."""
        directory = self.path.parent
        while not stop.is_set():
            try:
                watched = directory_identity(directory)
                if watched is not None:
                    await self._watch(pools, stop, directory, watched)
                    continue  # the directory was replaced: watch the new one at once
                self._problem(f"plan directory {directory} does not exist")
            except Exception as exc:  # noqa: BLE001  (the watch must outlive any one failure)
                self._problem(f"watching {directory} failed: {type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            except TimeoutError:
                pass

    async def _watch(self, pools: pool.Pools, stop: asyncio.Event, directory: Path,
                     watched: tuple[int, int]) -> None:
        """Apply changes until `stop` is set or the path names another directory or none.

        A watch holds the directory it started on: removed and recreated, renamed away or
        remounted, the path names another one and the watch would never see an event again.
        So after every event, and every RECHECK_MS without one, the watch ends when the
        directory itself was deleted (a new one may reuse the inode number) or the path names
        another directory or none.
        """
        await self._apply(pools)  # catch up on anything written before the watch
        here = os.path.abspath(directory)
        async for changes in watchfiles.awatch(
                directory, stop_event=stop, force_polling=self.poll, poll_delay_ms=500,
                debounce=200, step=50, rust_timeout=RECHECK_MS, yield_on_timeout=True,
                ignore_permission_denied=True):
            await self._apply(pools)
            deleted = any(change == watchfiles.Change.deleted and os.path.abspath(path) == here
                          for change, path in changes)
            if deleted or directory_identity(directory) != watched:
                log.warning("plan directory %s was replaced or removed: watching it anew",
                            directory)
                return

    async def _apply(self, pools: pool.Pools) -> None:
        plan = self.read()
        if plan is not None:
            replaced = await pools.apply(plan)
            log.info("plan generation %d in use (pool_size=%d, max_overflow=%d%s)",
                     plan.generation, plan.pool_size, plan.max_overflow,
                     "" if replaced else ", same sizes: pool kept")
