"""gunicorn --preload is safe: no pool crosses fork().

The seed article's failure (../shared seed 000): an engine built and used at import, before
gunicorn forks, leaves every worker sharing the same server connection; one worker closing it
breaks the others. Replayed here with that anti-pattern (naive/naive_preload_app.py), which
fails; then the same sequence against the app, which cannot fail that way because each worker
builds its own engine after fork.
"""

from __future__ import annotations

from pathlib import Path

import httpx

HERE = Path(__file__).parent


def fetch(url: str, path: str, count: int) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=10) as client:
        # Connection: close spreads the requests over the workers.
        return [client.get(path, headers={"Connection": "close"}) for _ in range(count)]


def backends_by_worker(responses: list[httpx.Response]) -> dict[int, set[int]]:
    """worker pid -> the PostgreSQL backend pids that answered it."""
    seen: dict[int, set[int]] = {}
    for r in responses:
        if r.status_code == 200:
            seen.setdefault(r.json()["pid"], set()).add(r.json()["backend"])
    return seen


def shared_backends(seen: dict[int, set[int]]) -> set[int]:
    """Backends that answered more than one worker: a connection that crossed fork()."""
    workers = list(seen.values())
    return {b for i, mine in enumerate(workers) for other in workers[i + 1:] for b in mine & other}


def test_replay_naive_preload_app_fails(start_app):
    naive = start_app(workers=2, preload=True, via_bouncer=False,
                      wsgi="naive_preload_app:app", chdir=HERE / "naive")
    statuses = [r.status_code for r in fetch(naive.url, "/query", 8)]
    # asyncpg refuses the inherited connection outright (another event loop's), so the async
    # replay shows errors, not a shared backend; the threaded one (tests/integration/flask)
    # shows the very backend answering two workers.
    assert any(status >= 500 for status in statuses), statuses


def test_preload_app_has_one_pool_per_worker_and_survives_a_worker_closing(start_app, stack):
    app = start_app(workers=2, preload=True, via_bouncer=False, POOLWARDEN_POOL_SIZE="2")
    first = fetch(app.url, "/probe/1?value=1", 20)
    assert all(r.status_code == 200 for r in first)
    workers = set(app.pools())
    assert len(workers) == 2

    rows = stack.psql(f"SELECT pid, application_name FROM pg_stat_activity "
                      f"WHERE application_name LIKE '{app.name}/%'")
    owners = {int(line.split(",")[1].rsplit("/", 1)[1]) for line in rows.splitlines()}
    assert owners <= workers, "every server connection belongs to one worker"
    assert app.pid not in owners, "the gunicorn master (where --preload imports) never connects"

    # The seed's sequence: one worker's connections go away ...
    victim = min(workers)
    terminated = stack.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            f"WHERE application_name = '{app.name}/{victim}'")
    assert int(terminated) >= 1
    # ... and every worker keeps answering (the victim reconnects: pre-ping; the other never
    # shared the connection).
    # The kernel decides which worker accepts a connection: ask in rounds (bounded) until both
    # workers have answered; every answer must be right.
    responses: list[httpx.Response] = []
    for _ in range(10):
        responses += fetch(app.url, "/probe/2?value=5", 20)
        if {r.json()["pid"] for r in responses if r.status_code == 200} == workers:
            break
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert {r.json()["pid"] for r in responses} == workers
    assert {r.json()["answer"] for r in responses} == {5 * 3 + 2}
    # No backend process ever answered two workers: no connection crossed the fork.
    seen = backends_by_worker(first + responses)
    assert len(seen) == 2 and not shared_backends(seen), seen
