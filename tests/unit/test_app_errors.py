"""poolwarden_fastapi_app.errors: the OpenAPI document lists every status the app answers,
and a 405 names every method of the path (the real app object, in process; no database
needed for these)."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from sqlalchemy import exc

from poolwarden_fastapi_app import errors, main

APP = main.create_app()
PATHS = APP.openapi()["paths"]
SESSION_OPERATIONS = [
    ("post", "/items"),
    ("get", "/items"),
    ("get", "/items/{item_id}"),
    ("get", "/probe/{variant}"),
]


@pytest.mark.parametrize(("method", "path"), SESSION_OPERATIONS)
def test_every_operation_with_a_pooled_session_documents_503_with_retry_after(method, path):
    answer = PATHS[path][method]["responses"]["503"]
    assert "Retry-After" in answer["headers"], answer


def test_documented_statuses():
    assert "404" in PATHS["/items/{item_id}"]["get"]["responses"]
    assert "400" in PATHS["/items"]["post"]["responses"]  # a body that is not text at all
    assert set(PATHS["/readyz"]["get"]["responses"]) >= {"200", "503"}
    assert list(PATHS["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def test_ids_and_offset_are_bounded_to_bigint():
    (item_id,) = PATHS["/items/{item_id}"]["get"]["parameters"]
    assert (item_id["schema"]["minimum"], item_id["schema"]["maximum"]) == (-(2**63), 2**63 - 1)
    params = {p["name"]: p["schema"] for p in PATHS["/items"]["get"]["parameters"]}
    assert params["offset"]["maximum"] == 2**63 - 1 and params["limit"]["maximum"] == 500


def test_allowed_methods_joins_the_routes_of_one_path():
    assert errors.allowed_methods(PATHS, "/items") == ["GET", "POST"]
    assert errors.allowed_methods(PATHS, "/items/42") == ["GET"]
    assert errors.allowed_methods(PATHS, "/nowhere") == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("OPTIONS", "/items", "GET, POST"), ("DELETE", "/items/1", "GET"), ("PUT", "/pool", "GET")],
)
async def test_405_names_every_method_of_the_path(method, path, allow):
    transport = httpx.ASGITransport(app=APP)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        answer = await client.request(method, path)
    assert answer.status_code == 405 and answer.headers["Allow"] == allow


def test_ascii_json_escapes_what_utf8_cannot_encode():
    body = errors.AsciiJSONResponse({"input": "a\ud800"}).body
    assert body == b'{"input":"a\\ud800"}'


@pytest.mark.parametrize(
    "cause",
    [
        asyncpg.exceptions.TooManyConnectionsError("too many connections for role \"app\""),
        asyncpg.exceptions.ProtocolViolationError("server login has been failing"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    ],
)
def test_the_database_refusing_for_now_is_unavailable_not_a_server_error(cause):
    """PostgreSQL's role limit (or PgBouncer's cached login failure) must reach the client as
    503 + Retry-After: the request may succeed a moment later."""
    assert errors.unavailable(exc.DBAPIError("SELECT 1", {}, cause))


def test_a_query_error_stays_a_server_error():
    cause = asyncpg.exceptions.UndefinedTableError("relation does not exist")
    assert not errors.unavailable(exc.DBAPIError("SELECT 1", {}, cause))
