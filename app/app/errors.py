"""Database failures as HTTP answers: 503 + Retry-After when the pool or database is busy
or down (clients and load balancers retry), 409 on a constraint violation."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc

log = logging.getLogger("app.errors")


def _runtime(request: Request):
    return request.app.state.runtime


def install(app: FastAPI) -> None:
    @app.exception_handler(exc.TimeoutError)
    async def pool_exhausted(request: Request, error: exc.TimeoutError) -> JSONResponse:
        rt = _runtime(request)
        return JSONResponse(
            {"detail": "database pool exhausted, retry shortly"}, status_code=503,
            headers={"Retry-After": str(rt.settings.retry_after_seconds)},
        )

    @app.exception_handler(exc.IntegrityError)
    async def integrity(request: Request, error: exc.IntegrityError) -> JSONResponse:
        _runtime(request).metrics.errors.labels("integrity").inc()
        return JSONResponse({"detail": "conflicts with existing data"}, status_code=409)

    @app.exception_handler(exc.DBAPIError)
    async def database_error(request: Request, error: exc.DBAPIError) -> JSONResponse:
        rt = _runtime(request)
        if error.connection_invalidated or isinstance(error, (exc.OperationalError,
                                                              exc.InterfaceError)):
            rt.metrics.errors.labels("db_unavailable").inc()
            log.warning("database unavailable: %s", error.orig)
            return JSONResponse(
                {"detail": "database unavailable, retry shortly"}, status_code=503,
                headers={"Retry-After": str(rt.settings.retry_after_seconds)},
            )
        rt.metrics.errors.labels("other").inc()
        log.error("database error: %s", error.orig)
        return JSONResponse({"detail": "database error"}, status_code=500)

    @app.exception_handler(OSError)
    async def connect_failed(request: Request, error: OSError) -> JSONResponse:
        rt = _runtime(request)
        rt.metrics.errors.labels("db_unavailable").inc()
        log.warning("database unreachable: %s", error)
        return JSONResponse(
            {"detail": "database unreachable, retry shortly"}, status_code=503,
            headers={"Retry-After": str(rt.settings.retry_after_seconds)},
        )
