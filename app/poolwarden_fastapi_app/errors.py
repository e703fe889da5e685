"""Failures as HTTP answers, and their place in the OpenAPI document.

503 + Retry-After when the pool or database is busy or down (clients and load balancers
retry), 409 on a constraint violation, 405 with an `Allow` that lists every method of the
path. The `*_RESPONSES` below document these answers on the routes that can give them.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import exc
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

log = logging.getLogger("poolwarden_fastapi_app.errors")

UNAVAILABLE_SQLSTATES = ("08", "53", "57P")
"""SQLSTATE prefixes that mean "not now", not "wrong request": connection exceptions (08, also
PgBouncer's `server login has been failing`), insufficient resources (53, such as the role's
`CONNECTION LIMIT`: too many connections for role), operator intervention (57P: shutdown)."""


def unavailable(error: exc.DBAPIError) -> bool:
    """True when the database could not serve now: a 503 + Retry-After, never a 500."""
    if error.connection_invalidated or isinstance(error, exc.OperationalError | exc.InterfaceError):
        return True
    for cause in (error.orig, getattr(error.orig, "__cause__", None)):
        code = getattr(cause, "sqlstate", None)
        if isinstance(code, str) and code.startswith(UNAVAILABLE_SQLSTATES):
            return True
    return False


class AsciiJSONResponse(JSONResponse):
    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("ascii")


class ErrorDetail(BaseModel):
    detail: str


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "integer", "minimum": 1}}}
# Every route that takes a pooled connection (a session dependency) can answer 503.
UNAVAILABLE_RESPONSES: dict[int | str, dict] = {
    503: {"model": ErrorDetail, "headers": RETRY_AFTER,
          "description": "pool exhausted (no connection within pool_timeout) or database "
                         "unavailable: retry after Retry-After seconds"},
}
NOT_FOUND_RESPONSES: dict[int | str, dict] = {
    404: {"model": ErrorDetail, "description": "no such item"},
}
# FastAPI answers 400 when a body cannot even be decoded as text (JSON that does not parse
# is a 422 like any other invalid body).
BAD_BODY_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorDetail, "description": "the body is not text in a JSON encoding "
                                               "(UTF-8, UTF-16 or UTF-32)"},
}


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def allowed_methods(openapi_paths: dict[str, dict], path: str) -> list[str]:
    """Every method the OpenAPI document lists for a request path. Starlette's 405 names only
    the methods of the first route that matched the path, not those of its neighbours
    (`GET /items` and `POST /items` are two routes)."""
    methods: set[str] = set()
    for template, operations in openapi_paths.items():
        regex, _, _ = compile_path(template)
        if regex.match(path):
            methods |= {method.upper() for method in operations if method in HTTP_METHODS}
    return sorted(methods)


def _runtime(request: Request):
    return request.app.state.runtime


def install(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 405:
            documented = allowed_methods(request.app.openapi()["paths"], request.url.path)
            if documented:  # else (a route kept out of the document) Starlette's Allow stands
                error.headers = {**(error.headers or {}), "Allow": ", ".join(documented)}
        return await http_exception_handler(request, error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        """FastAPI's 422, rendered as ASCII JSON: the errors echo the input, and input that is
        not valid Unicode (a lone surrogate, written as an escape in JSON) must not turn the
        422 into a 500 when the answer is encoded."""
        return AsciiJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

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
        if unavailable(error):
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
