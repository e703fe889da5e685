"""What one worker holds while it serves: settings, pools, plan watcher, metrics."""

from __future__ import annotations

import dataclasses

from app import config, metrics, planwatch, pool


@dataclasses.dataclass
class Runtime:
    settings: config.Settings
    pools: pool.Pools
    watcher: planwatch.PlanWatcher
    metrics: metrics.Metrics
