"""/healthz (liveness: the worker answers, no database) and /readyz (readiness).

`/readyz` says whether this worker can serve: its schema exists (the database answered at
least once) and, unless `?database=false`, the database answers now within a short timeout.
The chart's readiness probe uses `?database=false`: when the shared database is down every
pod is equally affected, and taking them all out of the Service would turn fast
`503 + Retry-After` answers into refused connections.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc, text

from poolwarden_fastapi_app import errors
from poolwarden_fastapi_app.runtime import RuntimeDep

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    status: str
    database: str | None = None
    reason: str | None = None


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={
    503: {"model": Readiness, "headers": errors.RETRY_AFTER,
          "description": "not ready: schema not created yet, or the database does not answer"},
})
async def readyz(rt: RuntimeDep, database: bool = True) -> JSONResponse:
    if not rt.schema_ready:
        return JSONResponse({"status": "not ready", "reason": "schema not created yet"},
                            status_code=503,
                            headers={"Retry-After": str(rt.settings.retry_after_seconds)})
    if not database:
        return JSONResponse({"status": "ready", "database": "not checked"})
    try:
        async with asyncio.timeout(rt.settings.readiness_timeout):
            async with rt.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except (TimeoutError, OSError, exc.SQLAlchemyError) as error:
        return JSONResponse({"status": "not ready", "reason": type(error).__name__},
                            status_code=503,
                            headers={"Retry-After": str(rt.settings.retry_after_seconds)})
    return JSONResponse({"status": "ready"})
