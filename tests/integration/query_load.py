"""Many concurrent tasks, each running its own SQL text, on the app's own engine (its
settings, `poolwarden.aio.build_engine`).

Runs inside a separate process (spawned, never forked), like a gunicorn worker.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from poolwarden import aio, planfile
from poolwarden_fastapi_app import config


def statement(variant: int):
    return text(f"SELECT CAST(:value AS bigint) * {variant + 1} + {variant} AS answer "
                f"/* variant {variant} */")


def expected(variant: int, value: int) -> int:
    return value * (variant + 1) + variant


async def _run(settings: config.Settings, variants: list[int], queries: int) -> dict:
    engine = aio.build_engine(settings.url(), planfile.PoolPlan(pool_size=5, max_overflow=0),
                              settings.engine_options())
    counts = {"ok": 0, "wrong": 0, "failed": 0, "errors": []}

    async def task(variant: int) -> None:
        for i in range(queries):
            value = variant * 100_000 + i
            try:
                async with engine.connect() as conn:
                    answer = (await conn.execute(statement(variant), {"value": value})).scalar()
                    await conn.commit()
            except Exception as exc:  # noqa: BLE001  (counted and reported, the point of the test)
                counts["failed"] += 1
                counts["errors"].append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            counts["ok" if answer == expected(variant, value) else "wrong"] += 1

    try:
        await asyncio.gather(*(task(v) for v in variants))
    finally:
        await engine.dispose()
    counts["errors"] = counts["errors"][:5]
    return counts


def run(settings_env: dict[str, str], variants: list[int], queries: int) -> dict:
    """Entry point in the child process."""
    settings = config.Settings(**{k.removeprefix("POOLWARDEN_").lower(): v
                                  for k, v in settings_env.items()})
    return asyncio.run(_run(settings, variants, queries))
