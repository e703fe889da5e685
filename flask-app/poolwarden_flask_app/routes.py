"""The routes: /items (the FastAPI app's shape), /probe, /healthz, /readyz, /pool, /metrics."""

from __future__ import annotations

import os
import socket
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import exc, select, text

from poolwarden import metrics as poolwarden_metrics
from poolwarden_flask_app import models
from poolwarden_flask_app.extensions import pw, runtime

bp = Blueprint("api", __name__)
VARIANTS = 1000


def unready() -> Response | None:
    """503 + Retry-After until the schema exists (the database answered at least once)."""
    rt = runtime()
    if rt.schema.ensure():
        return None
    response = jsonify({"detail": "not ready: schema not created yet"})
    response.status_code = 503
    response.headers["Retry-After"] = str(rt.settings.retry_after_seconds)
    return response


def item_json(item: models.Item) -> dict[str, Any]:
    return models.ItemPublic.model_validate(item).model_dump(mode="json")


class ListQuery(BaseModel):
    limit: int = Field(100, ge=1, le=500)
    offset: int = Field(0, ge=0, le=models.BIGINT_MAX)  # OFFSET is a bigint


class ItemPath(BaseModel):
    item_id: int = Field(ge=models.BIGINT_MIN, le=models.BIGINT_MAX)  # the id column


class ProbeQuery(BaseModel):
    variant: int = Field(ge=0, lt=VARIANTS)
    value: int = Field(0, ge=-(2**31), lt=2**31)
    sleep: float = Field(0.0, ge=0, le=5)


@bp.post("/items")
def create_item() -> Any:
    body = request.get_json(silent=True)
    item_create = models.ItemCreate.model_validate(body if body is not None else {})
    if (failed := unready()) is not None:
        return failed
    item = models.Item(name=item_create.name, note=item_create.note)
    pw.session.add(item)
    pw.session.flush()
    pw.session.refresh(item)
    return jsonify(item_json(item)), 201


@bp.get("/items/<int(signed=True):item_id>")
def read_item(item_id: int) -> Any:
    ItemPath(item_id=item_id)
    if (failed := unready()) is not None:
        return failed
    item = pw.readonly_session.get(models.Item, item_id)
    if item is None:
        return jsonify({"detail": f"item {item_id} not found"}), 404
    return jsonify(item_json(item))


@bp.get("/items")
def list_items() -> Any:
    query = ListQuery.model_validate(request.args.to_dict())
    if (failed := unready()) is not None:
        return failed
    rows = pw.readonly_session.scalars(
        select(models.Item).order_by(models.Item.id).limit(query.limit).offset(query.offset))
    return jsonify([item_json(item) for item in rows])


def client_address(session: Any) -> str:
    """The local address of this request's socket to the database: two processes that
    report the same one share a connection."""
    fd = session.connection().connection.dbapi_connection.pgconn.socket
    with socket.socket(fileno=os.dup(fd)) as sock:
        host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


@bp.get("/probe/<int:variant>")
def probe(variant: int) -> Any:
    """Echo a value through the database with one of VARIANTS distinct statements; also
    which backend (pg_backend_pid) and which client socket served it."""
    query = ProbeQuery.model_validate({"variant": variant, **request.args.to_dict()})
    session = pw.readonly_session
    statement = text(
        f"SELECT CAST(:value AS bigint) * {query.variant + 1} + {query.variant} AS answer, "
        f"pg_backend_pid() AS backend, "
        f"pg_sleep(CAST(:sleep AS float8)) IS NULL AS slept /* variant {query.variant} */")
    row = session.execute(statement, {"value": query.value, "sleep": query.sleep}).one()
    return jsonify({"variant": query.variant, "value": query.value, "answer": row.answer,
                    "pid": os.getpid(), "backend": row.backend,
                    "client": client_address(session)})


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    """Ready when the schema exists and (unless ?database=false) the database answers now."""
    rt = runtime()
    retry = {"Retry-After": str(rt.settings.retry_after_seconds)}
    if not rt.schema.ensure():
        return jsonify({"status": "not ready", "reason": "schema not created yet"}), 503, retry
    if request.args.get("database", "true").lower() in ("false", "0", "no"):
        return jsonify({"status": "ready", "database": "not checked"})
    try:
        with rt.pools.lease() as slot, slot.engine.connect() as conn:
            conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"),
                         {"ms": f"{int(rt.settings.readiness_timeout * 1000)}ms"})
            conn.execute(text("SELECT 1"))
    except (OSError, exc.SQLAlchemyError) as error:
        return jsonify({"status": "not ready", "reason": type(error).__name__}), 503, retry
    return jsonify({"status": "ready"})


@bp.get("/pool")
def pool_status() -> Any:
    status = pw.status()
    runtime().metrics.observe_pool(status)
    return jsonify(status)


@bp.get("/metrics")
def metrics() -> Response:
    rt = runtime()
    rt.metrics.observe_pool(pw.status())
    return Response(rt.metrics.exposition(), content_type=poolwarden_metrics.CONTENT_TYPE)


def install_error_handlers(app: Any) -> None:
    @app.errorhandler(ValidationError)
    def invalid(error: ValidationError) -> Any:
        # ASCII JSON: the errors echo the input, which may not be valid Unicode.
        errors = error.errors(include_url=False, include_context=False)
        return jsonify({"detail": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                                   for e in errors]}), 422

    @app.errorhandler(exc.IntegrityError)
    def integrity(error: exc.IntegrityError) -> Any:
        runtime().metrics.errors.labels("integrity").inc()
        return jsonify({"detail": "conflicts with existing data"}), 409
