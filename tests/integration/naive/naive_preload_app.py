"""The anti-pattern from the seed article, for the --preload test to replay: the engine is
built at import and used before gunicorn forks, so every worker inherits the same pooled
connection. Never do this; the reference app (poolwarden.fastapi) builds its engine in each
worker's lifespan."""

import asyncio
import os

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine(
    f"postgresql+asyncpg://{os.environ['POOLWARDEN_DB_USER']}:"
    f"{os.environ['POOLWARDEN_DB_PASSWORD']}@{os.environ['POOLWARDEN_DB_HOST']}:"
    f"{os.environ['POOLWARDEN_DB_PORT']}/{os.environ['POOLWARDEN_DB_NAME']}",
    pool_size=5, max_overflow=10, pool_timeout=1,
)


async def _warm() -> None:
    async with engine.connect() as conn:  # the connection now sits in the pool, pre-fork
        await conn.execute(text("SELECT 1"))


asyncio.run(_warm())
app = FastAPI()


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.get("/query")
async def query() -> dict[str, int]:
    async with engine.connect() as conn:
        backend = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return {"pid": os.getpid(), "backend": backend}
