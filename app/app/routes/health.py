"""/healthz (liveness: the worker answers, no database) and /readyz (database reachable)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import exc, text

from app import deps

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(rt: deps.RuntimeDep) -> JSONResponse:
    if not rt.schema_ready:
        return JSONResponse({"status": "not ready", "reason": "schema not created yet"},
                            status_code=503,
                            headers={"Retry-After": str(rt.settings.retry_after_seconds)})
    try:
        async with asyncio.timeout(rt.settings.readiness_timeout):
            async with rt.pools.lease() as slot, slot.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except (TimeoutError, OSError, exc.SQLAlchemyError) as error:
        return JSONResponse({"status": "not ready", "reason": type(error).__name__},
                            status_code=503,
                            headers={"Retry-After": str(rt.settings.retry_after_seconds)})
    return JSONResponse({"status": "ready"})
