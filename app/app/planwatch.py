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
from pathlib import Path

import watchfiles

from app import pool
from poolwarden import planfile, planreader

log = logging.getLogger("app.planwatch")


class PlanWatcher(planreader.PlanReader):
    """A PlanReader that applies every new valid plan to this worker's pools (asyncio)."""

    def __init__(self, path: Path, default: planfile.PoolPlan, *, poll: bool = False) -> None:
        super().__init__(path, default)
        self.poll = poll

    async def run(self, pools: pool.Pools, stop: asyncio.Event) -> None:
        """Apply plan changes until `stop` is set; a failing watch restarts after a pause."""
        directory = self.path.parent
        while not stop.is_set():
            try:
                watched = planreader.directory_identity(directory)
                if watched is not None:
                    await self._watch(pools, stop, directory, watched)
                    continue  # the directory was replaced: watch the new one at once
                self.problem(f"plan directory {directory} does not exist")
            except Exception as exc:  # noqa: BLE001  (the watch must outlive any one failure)
                self.problem(f"watching {directory} failed: {type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=planreader.RETRY_SECONDS)
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
        async for changes in watchfiles.awatch(
                directory, stop_event=stop, force_polling=self.poll, poll_delay_ms=500,
                debounce=200, step=50, rust_timeout=planreader.RECHECK_MS, yield_on_timeout=True,
                ignore_permission_denied=True):
            await self._apply(pools)
            if planreader.directory_replaced(changes, directory, watched):
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
