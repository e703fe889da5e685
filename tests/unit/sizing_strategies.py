"""Hypothesis strategies for valid PgBouncer sizing includes (poolwarden.pgbouncer_ini), shared
by the Python parser's tests and the entrypoint's bash check, so both see the same files."""

from __future__ import annotations

from hypothesis import strategies as st

from poolwarden import pgbouncer_ini

aliases = st.from_regex(pgbouncer_ini.ALIAS_PATTERN, fullmatch=True).filter(
    lambda name: name not in pgbouncer_ini.RESERVED_ALIASES
)
databases = st.builds(
    pgbouncer_ini.Database,
    name=aliases,
    host=st.from_regex(pgbouncer_ini.HOST_PATTERN, fullmatch=True),
    port=st.integers(1, 65535),
    dbname=st.from_regex(pgbouncer_ini.DBNAME_PATTERN, fullmatch=True),
    pool_size=st.integers(1, 10_000),
)
sizings = st.builds(
    pgbouncer_ini.Sizing,
    default_pool_size=st.integers(1, 10_000),
    max_db_connections=st.integers(1, 10_000),
    reserve_pool_size=st.integers(0, 1_000),
    max_client_conn=st.integers(0, 100_000),
    max_user_connections=st.integers(1, 10_000),
    databases=st.lists(databases, max_size=6, unique_by=lambda d: d.name).map(tuple),
)
