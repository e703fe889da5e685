"""The poolwarden reference service: FastAPI + SQLAlchemy (async, asyncpg) behind PgBouncer,
on the plan-following engine of `poolwarden.aio` / `poolwarden.fastapi`."""
