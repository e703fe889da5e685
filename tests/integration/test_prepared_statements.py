"""asyncpg behind PgBouncer's transaction mode is correct by construction.

50 concurrent tasks x 200 queries, each task with its own SQL text, spread over 2 worker
processes, on the app's own engine (`poolwarden.aio.build_engine` with its settings): zero
errors and zero wrong answers, with both supported set-ups:
  * PgBouncer tracks prepared statements (max_prepared_statements > 0) + asyncpg's cache on;
  * PgBouncer does not (as before 1.21) + the app's fallback (POOLWARDEN_STATEMENT_CACHE=false).
The control case (no tracking, cache on: asyncpg's defaults) fails, which is what the two
set-ups prevent. The same over HTTP through gunicorn workers is in test_pool_swap.py.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing

import pytest
import query_load

TASKS, QUERIES, PROCESSES = 50, 200, 2


@pytest.fixture(scope="module")
def untracked_bouncer(stack):
    """A PgBouncer that does not track prepared statements, like PgBouncer < 1.21."""
    import devstack

    port = devstack.free_port()
    bouncer = stack.start_pgbouncer(name=f"pgbouncer-untracked-{port}", port=port,
                                    PGBOUNCER_MAX_PREPARED_STATEMENTS="0")
    yield bouncer
    stack.stop_one(bouncer.name)


def run_in_processes(env: dict[str, str], *, tasks: int, queries: int) -> dict:
    """`tasks` variants split over PROCESSES spawned processes; summed counts."""
    chunks = [list(range(tasks))[i::PROCESSES] for i in range(PROCESSES)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        results = list(pool.map(query_load.run, [env] * PROCESSES, chunks,
                                [queries] * PROCESSES))
    total = {"ok": 0, "wrong": 0, "failed": 0, "errors": []}
    for result in results:
        for key in ("ok", "wrong", "failed"):
            total[key] += result[key]
        total["errors"] += result["errors"]
    return total


def engine_env(stack, port: int, *, statement_cache: bool) -> dict[str, str]:
    return stack.app_env(POOLWARDEN_DB_PORT=str(port), POOLWARDEN_POOL_TIMEOUT="60",
                         POOLWARDEN_STATEMENT_CACHE=str(statement_cache).lower(),
                         POOLWARDEN_INSTANCE="prepared-statements")


@pytest.mark.parametrize("mode", ["tracked-by-pgbouncer", "statement-cache-off"])
def test_distinct_statements_in_two_processes_are_all_correct(mode, stack, untracked_bouncer):
    if mode == "tracked-by-pgbouncer":
        env = engine_env(stack, stack.bouncer_port, statement_cache=True)
    else:
        env = engine_env(stack, untracked_bouncer.port, statement_cache=False)

    result = run_in_processes(env, tasks=TASKS, queries=QUERIES)

    assert result["failed"] == 0, result
    assert result["wrong"] == 0, result
    assert result["ok"] == TASKS * QUERIES


def test_control_asyncpg_defaults_without_tracking_fail(stack, untracked_bouncer):
    """Why the set-ups above matter: asyncpg's cache behind a non-tracking PgBouncer breaks."""
    env = engine_env(stack, untracked_bouncer.port, statement_cache=True)
    result = run_in_processes(env, tasks=10, queries=20)
    assert result["failed"] + result["wrong"] > 0, result
