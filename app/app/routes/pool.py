"""/pool: this worker's pool and plan, and /metrics: Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import deps

router = APIRouter(tags=["pool"])


@router.get("/pool")
async def pool_status(rt: deps.RuntimeDep) -> dict[str, object]:
    status = rt.pools.status()
    rt.metrics.observe_pool(status)
    return status


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition format"},
})
async def metrics(rt: deps.RuntimeDep) -> Response:
    rt.metrics.observe_pool(rt.pools.status())
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
