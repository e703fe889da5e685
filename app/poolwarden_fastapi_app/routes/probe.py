"""/probe/{variant}: echo a value through the database with one of many distinct statements.

Each variant is different SQL text (a different prepared statement), so a prepared statement
served from the wrong server connection, or another client's statement of the same name,
shows up as a wrong answer. Used by the tests and the benchmark; read-only, no table.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import text

from poolwarden.fastapi import ReadOnlySessionDep
from poolwarden_fastapi_app import errors

router = APIRouter(prefix="/probe", tags=["probe"], responses=errors.UNAVAILABLE_RESPONSES)
VARIANTS = 1000


@router.get("/{variant}")
async def probe(
    session: ReadOnlySessionDep,
    variant: Annotated[int, Path(ge=0, lt=VARIANTS)],
    value: Annotated[int, Query(ge=-(2**31), lt=2**31)] = 0,
    sleep: Annotated[float, Query(ge=0, le=5)] = 0.0,
) -> dict[str, int]:
    # `variant` is a validated integer: it only selects which of VARIANTS statements runs.
    statement = text(
        f"SELECT CAST(:value AS bigint) * {variant + 1} + {variant} AS answer, "
        f"pg_backend_pid() AS backend, "
        f"pg_sleep(CAST(:sleep AS float8)) IS NULL AS slept /* variant {variant} */"
    )
    row = (await session.execute(statement, {"value": value, "sleep": sleep})).one()
    # backend: the PostgreSQL (or, behind PgBouncer, the server connection's) process that
    # answered; two workers never see the same one at once unless a connection crossed a fork.
    return {"variant": variant, "value": value, "answer": row.answer, "pid": os.getpid(),
            "backend": row.backend}
