"""What one worker holds while it serves: settings, the plan-following engine, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from fastapi import Depends, Request

from poolwarden import aio, metrics
from poolwarden_fastapi_app import config


@dataclasses.dataclass
class Runtime:
    settings: config.Settings
    engine: aio.PlanEngine
    metrics: metrics.PoolMetrics
    schema: asyncio.Task[None] | None = None  # done once the schema exists (see /readyz)

    @property
    def schema_ready(self) -> bool:
        return self.schema is not None and self.schema.done() and not self.schema.cancelled()


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
