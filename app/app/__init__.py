"""The poolwarden reference service: FastAPI + SQLAlchemy (async, asyncpg) behind PgBouncer."""
