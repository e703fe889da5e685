"""The app's poolwarden extension instance (one per process, bound to the app in main)."""

from __future__ import annotations

import dataclasses
import os

from flask import current_app

from poolwarden import threaded
from poolwarden.flask import PoolWarden
from poolwarden.metrics import PoolMetrics
from poolwarden_flask_app import config, db

pw = PoolWarden()


@dataclasses.dataclass
class Runtime:
    """What one process holds while it serves: settings, pools, schema state, metrics."""

    settings: config.Settings
    pools: threaded.Pools
    schema: db.Schema
    _metrics: PoolMetrics | None = None
    _metrics_pid: int = 0

    @property
    def metrics(self) -> PoolMetrics:
        """This process's metrics, made at first use (never in a --preload master)."""
        if self._metrics is None or self._metrics_pid != os.getpid():
            self._metrics, self._metrics_pid = PoolMetrics(), os.getpid()
        return self._metrics

    def observe_pool(self, status: dict[str, object]) -> None:
        """The pool observer: into this process's metrics."""
        self.metrics.observe_pool(status)


def runtime() -> Runtime:
    return current_app.extensions["poolwarden_flask_app"]
