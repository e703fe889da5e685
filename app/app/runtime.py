"""What one worker holds while it serves: settings, pools, plan watcher, metrics."""

from __future__ import annotations

import asyncio
import dataclasses

from app import config, metrics, planwatch, pool


@dataclasses.dataclass
class Runtime:
    settings: config.Settings
    pools: pool.Pools
    watcher: planwatch.PlanWatcher
    metrics: metrics.Metrics
    schema: asyncio.Task[None] | None = None  # done once the schema exists (see /readyz)

    @property
    def schema_ready(self) -> bool:
        return self.schema is not None and self.schema.done() and not self.schema.cancelled()
