"""Reading the plan file a pod has mounted, keeping the last good plan (pure: no third party).

The plan file is a mounted ConfigMap: the kubelet replaces it atomically (a symlink swap in
the directory), so a watcher watches the directory, not the file, and asks `PlanReader.read`
after every change. Unchanged bytes bring nothing new. A missing, unparsable or invalid file
keeps the last good plan and logs one error per distinct problem (not one per event).

Both plan-following engines (`poolwarden.aio` for asyncio, `poolwarden.threaded` for threads)
build on this; `directory_identity` and `directory_replaced` tell a watch that the directory
it started on is gone (removed and recreated, renamed away, remounted) so it must start anew.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from poolwarden import planfile

log = logging.getLogger("poolwarden.plan")
RECHECK_MS = 1000
"""How often a quiet watch checks that its directory is still the one named."""
RETRY_SECONDS = 2.0
"""How long a watch that failed (or whose directory is missing) waits before it starts again."""
DELETED = 3
"""watchfiles.Change.deleted, as a plain int so this module needs no watchfiles."""


def directory_identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory the path names now; None when it names none."""
    try:
        st = directory.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def directory_replaced(changes: Iterable[tuple[int, str]], directory: Path,
                       watched: tuple[int, int]) -> bool:
    """After a batch of watch events: is the watched directory gone or another one now?

    A watch holds the directory it started on: removed and recreated, renamed away or
    remounted, the path names another one and the watch would never see an event again. The
    directory itself deleted counts even when a new one reuses the inode number.
    """
    here = os.path.abspath(directory)
    deleted = any(int(change) == DELETED and os.path.abspath(path) == here
                  for change, path in changes)
    return deleted or directory_identity(directory) != watched


class PlanReader:
    """The plan to use now, from one plan file; `last_good` survives every bad version."""

    def __init__(self, path: Path, default: planfile.PoolPlan) -> None:
        self.path = Path(path)
        self.default = default
        self.last_good: planfile.PoolPlan = default
        self._last_bytes: bytes | None = None
        self._last_problem: str | None = None

    @property
    def directory(self) -> Path:
        return self.path.parent

    def read(self) -> planfile.PoolPlan | None:
        """The plan to use now, or None when the file brings nothing new."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if self._last_bytes is None:
                return None  # never had a file: the defaults are the plan, nothing to report
            self.problem(f"plan file {self.path} disappeared")
            return None
        except OSError as exc:
            self.problem(f"plan file {self.path} cannot be read: {exc}")
            return None
        if data == self._last_bytes:
            return None
        self._last_bytes = data
        try:
            plan = planfile.parse(data)
        except planfile.PlanFileError as exc:
            self.problem(f"plan file {self.path} rejected: {exc}")
            return None
        self._last_problem = None
        self.last_good = plan
        return plan

    def initial(self) -> planfile.PoolPlan:
        """The plan to start with: the file's, else the defaults (said once, at INFO)."""
        plan = self.read()
        if plan is None and self._last_bytes is None:
            log.info("no plan file at %s yet: pool_size=%d max_overflow=%d from the settings",
                     self.path, self.default.pool_size, self.default.max_overflow)
        return plan or self.last_good

    def problem(self, message: str) -> None:
        """Log `message` with the plan kept, unless it is the problem logged last."""
        if message != self._last_problem:
            log.error("%s; keeping plan generation %d (pool_size=%d, max_overflow=%d). "
                      "Fix or rewrite the file (format: poolwarden.planfile).", message,
                      self.last_good.generation, self.last_good.pool_size,
                      self.last_good.max_overflow)
            self._last_problem = message
