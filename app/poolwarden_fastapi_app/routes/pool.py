"""/pool: this worker's pool and plan, and /metrics: Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response

from poolwarden import metrics
from poolwarden_fastapi_app.runtime import RuntimeDep

router = APIRouter(tags=["pool"])


@router.get("/pool")
async def pool_status(rt: RuntimeDep) -> dict[str, object]:
    rt.engine.observe()
    return rt.engine.status()


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition format"},
})
async def metrics_exposition(rt: RuntimeDep) -> Response:
    rt.engine.observe()
    return Response(rt.metrics.exposition(), media_type=metrics.CONTENT_TYPE)
