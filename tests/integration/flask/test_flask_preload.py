"""The seed's failure replayed against the Flask service (gunicorn gthread, --preload).

The seed's app builds its engine at import and queries before gunicorn forks: every worker
inherits the same pooled connection (one PostgreSQL backend, one client socket, used by two
processes), and a worker disposing its engine closes the connection under the others, which
fail with `server closed the connection unexpectedly`. The naive app
(../naive/naive_preload_flask_app.py) must show exactly that; the Flask service, whose master
also holds a pooled connection when it forks (it creates the schema with --preload), must
show neither: no backend pid nor client socket is seen by two workers, and the connection
the master made going away breaks no request.

Both run directly against PostgreSQL, so a backend pid names one server connection (through
PgBouncer, clients share server connections by design).
"""

from __future__ import annotations

import collections
import re
import time
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent
FLASK_APP = HERE.parents[2] / "flask-app"
NAIVE = HERE.parent / "naive"
CONNECTION_LOST = re.compile(r"server closed the connection unexpectedly|consuming input failed"
                             r"|the connection is lost|terminating connection")


def per_worker(url: str, path: str, *, workers: int, each: int = 5, timeout: float = 60
               ) -> dict[int, list[dict]]:
    """Ask until every worker answered `each` times (a fresh TCP connection per request, so
    the kernel spreads them); the answers, by worker pid. Every answer must be a 200."""
    seen: dict[int, list[dict]] = collections.defaultdict(list)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=10) as client:
        while len(seen) < workers or min(len(v) for v in seen.values()) < each:
            assert time.monotonic() < deadline, f"workers seen: {dict(seen)}"
            response = client.get(path, headers={"Connection": "close"})
            assert response.status_code == 200, response.text[:500]
            body = response.json()
            seen[body["pid"]].append(body)
    return dict(seen)


def shared(seen: dict[int, list[dict]]) -> dict[str, set[int]]:
    """Every backend pid and client socket reported by more than one worker process."""
    owners: dict[str, set[int]] = collections.defaultdict(set)
    for pid, answers in seen.items():
        for answer in answers:
            owners[f"backend {answer['backend']}"].add(pid)
            owners[f"client {answer['client']}"].add(pid)
    return {key: pids for key, pids in owners.items() if len(pids) > 1}


def test_replay_naive_preload_flask_app_shares_a_connection_and_fails(start_flask):
    naive = start_flask(workers=2, threads=2, preload=True, via_bouncer=False, conf=None,
                        wsgi="naive_preload_flask_app:app", chdir=NAIVE)
    seen = per_worker(naive.url, "/query", workers=2)
    sharing = shared(seen)
    assert any(key.startswith("backend") for key in sharing), seen  # the detector sees it
    assert any(key.startswith("client") for key in sharing), seen

    statuses: list[int] = []
    with httpx.Client(base_url=naive.url, timeout=10) as client:
        assert client.get("/dispose").status_code == 200  # one worker closes "its" connection
        for _ in range(40):  # the kernel picks the worker: ask until another one fails
            statuses.append(client.get("/query", headers={"Connection": "close"}).status_code)
            if statuses[-1] >= 500:
                break
    assert any(status >= 500 for status in statuses), statuses
    assert CONNECTION_LOST.search(naive.log_text()), naive.log_text()[-3000:]


@pytest.mark.parametrize("master_keeps", [False, True], ids=["as-shipped", "master-keeps"])
def test_preload_flask_service_shares_no_connection_and_survives_the_replay(start_flask,
                                                                           stack, master_keeps):
    """As shipped, the master closes its connection before forking (`when_ready`);
    master-keeps runs without that hook, so the workers fork with the master's pooled
    connection in their copy of the pool and only the fork handling keeps them off it."""
    conf = (HERE / "keep_master_connection.conf.py" if master_keeps
            else FLASK_APP / "gunicorn.conf.py")
    app = start_flask(workers=2, threads=4, preload=True, via_bouncer=False, conf=conf)
    rows = stack.psql("SELECT pid, application_name FROM pg_stat_activity "
                      f"WHERE application_name LIKE '{app.name}/%'")
    by_owner = collections.defaultdict(set)
    for line in rows.splitlines():
        backend, label = line.split(",", 1)
        by_owner[int(label.rsplit("/", 1)[1])].add(int(backend))
    master = by_owner.get(app.pid, set())
    if master_keeps:
        assert master, f"the master holds no connection from before the fork: {by_owner}"
    else:
        assert not master, f"the master kept a connection outside the budget: {by_owner}"
        assert "schema ready" in app.log_text()  # it did connect, with --preload, pre-fork

    seen = per_worker(app.url, "/probe/1?value=1", workers=2)
    assert shared(seen) == {}, seen
    used = {answer["backend"] for answers in seen.values() for answer in answers}
    assert not used & master, "a worker used the connection the master made before fork"
    for pid, answers in seen.items():  # each worker's backends are labelled with its own pid
        rows = stack.psql("SELECT application_name FROM pg_stat_activity WHERE pid IN "
                          f"({','.join(str(a['backend']) for a in answers)})")
        assert set(rows.split()) == {f"{app.name}/{pid}"}, (pid, rows)

    # The seed's sequence: the connection every worker would have inherited goes away, and
    # one worker's own connections too ...
    victim = min(seen)
    terminated = stack.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE application_name IN ('{app.name}/{app.pid}', '{app.name}/{victim}')")
    assert int(terminated) >= 1 + len(master)
    # ... and every worker keeps answering, correctly (the victim reconnects: pre-ping).
    after = per_worker(app.url, "/probe/2?value=5", workers=2, each=10)
    assert set(after) == set(seen)
    assert {a["answer"] for answers in after.values() for a in answers} == {5 * 3 + 2}
    assert shared(after) == {}, after
    assert not CONNECTION_LOST.search(app.log_text())
