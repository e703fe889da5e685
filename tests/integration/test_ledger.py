"""The operator's PgBouncer ledger against the real thing: PgBouncer 1.24 with a sizing include
the operator would write, Debian's prometheus-pgbouncer-exporter beside it (as the chart's
sidecar), the operator's own code asking it (``ask.bouncer_reports``, aiohttp) and reading it
(``bouncers``, ``inuse``), under real load, compared with PgBouncer's ``SHOW POOLS`` and
PostgreSQL's ``pg_stat_activity``.

- Applied: the pod's effective config confirms the sizing file; after a new file it lags, named
  by the difference, until PgBouncer has reloaded it.
- In use, held load: clients sleeping in transactions, more than the alias's pool (so some
  wait): every number equals SHOW POOLS and pg_stat_activity (server connections by the
  clients' application_name, which PgBouncer passes to the server connection).
- In use, churning load: short transactions in a loop; each sample's server connections equal
  pg_stat_activity's, the active ones are printed beside it, the peaks cover what was seen.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import urllib.request

import devstack
import psycopg
import pytest

from poolwarden import pgbouncer_ini
from poolwarden_operator import ask, bouncers, inuse

CONSUMERS = ["app", "batch"]


def figure(line):
    sys.stdout.write(line + "\n")


def sizing_text(stack, generation, app_pool, batch_pool=2, max_db=10, max_user=8):
    def alias(name, pool):
        return pgbouncer_ini.Database(name, "127.0.0.1", stack.pg_port, devstack.APP_DB, pool)

    sizing = pgbouncer_ini.Sizing(
        default_pool_size=5, max_db_connections=max_db, reserve_pool_size=0,
        max_client_conn=200, max_user_connections=max_user,
        databases=(alias("app", app_pool), alias("batch", batch_pool)),
    )  # fmt: skip
    return sizing, pgbouncer_ini.render(sizing, budget="shop/ledger", generation=generation)


def ask_once(target):
    return asyncio.run(ask.bouncer_reports([target]))


def wait(check, what, timeout=30.0, step=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def pg_servers(stack):
    """Server connections PgBouncer opened for our clients, by alias and state, as PostgreSQL
    sees them: application_name is the client's (``ledger-<alias>``)."""
    out = stack.psql(
        "SELECT application_name, state, count(*) FROM pg_stat_activity "
        f"WHERE usename = '{devstack.APP_USER}' AND backend_type = 'client backend' "
        "AND application_name LIKE 'ledger-%' GROUP BY 1, 2"
    )
    found: dict[str, dict[str, int]] = {c: {} for c in CONSUMERS}
    for line in out.splitlines():
        if line.strip():
            name, state, count = line.split(",")
            found[name.removeprefix("ledger-")][state] = int(count)
    return found


def show_pools(bouncer):
    return {row["database"]: row for row in bouncer.show("POOLS") if row["database"] in CONSUMERS}


@pytest.fixture
def exporter(stack, start_bouncer):
    bouncer = start_bouncer(PGBOUNCER_SERVER_IDLE_TIMEOUT="600")
    port = devstack.free_port()
    name = f"pgbouncer-exporter-{port}"
    os.environ["PGBOUNCER_EXPORTER_CONNECTION_STRING"] = (
        f"postgres://pgbouncer_stats:{stack.stats_password}@127.0.0.1:{bouncer.port}/pgbouncer"
        "?sslmode=disable"
    )
    try:  # chroot-run passes PG* through
        stack._spawn(name, stack.chroot_cmd(
            "prometheus-pgbouncer-exporter", f"--web.listen-address=127.0.0.1:{port}"))
    finally:
        del os.environ["PGBOUNCER_EXPORTER_CONNECTION_STRING"]
    target = bouncers.Target("pgbouncer-0", f"http://127.0.0.1:{port}/metrics")
    yield bouncer, target
    stack.stop_one(name)


def test_the_ledger_matches_show_pools_and_pg_stat_activity_under_load(stack, exporter):
    bouncer, target = exporter
    # -- applied: the pod runs the sizing file, then lags behind a new one until it reloads
    sizing7, text7 = sizing_text(stack, 7, app_pool=5)
    bouncer.write_sizing(text7)

    def confirms(sizing):
        report = ask_once(target)[0]
        return report.scrape is not None and not bouncers.judge(report.scrape, sizing) and report

    first = wait(lambda: confirms(sizing7), "the pod on sizing generation 7")
    j = bouncers.judged([first], sizing7, 7)
    assert bouncers.pods_status(j) == [{"name": "pgbouncer-0", "applied": True, "generation": 7}]
    assert set(bouncers.SERIES) <= _exported_names(target.url)  # every series the ledger reads

    sizing8, text8 = sizing_text(stack, 8, app_pool=4)
    before = ask_once(target)
    assert bouncers.judged(before, sizing8, 8).lagging == [
        ("pgbouncer-0", "alias app pool_size 5, sizing file 4")]
    written = time.monotonic()
    bouncer.write_sizing(text8)
    wait(lambda: confirms(sizing8), "the pod on sizing generation 8")
    figure(f"\nledger: PgBouncer confirmed sizing generation 8 "
          f"{time.monotonic() - written:.2f} s after the file was written")

    # -- held load: 7 clients on app (pool 4: 4 active, 3 waiting), 2 on batch (pool 2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def client(alias, sql, loop):
        try:
            with psycopg.connect(
                f"postgresql://{devstack.APP_USER}:{stack.app_password}@127.0.0.1:"
                f"{bouncer.port}/{alias}", application_name=f"ledger-{alias}",
                connect_timeout=10, autocommit=True,
            ) as c:
                while True:
                    c.execute(sql)
                    if not loop or stop.is_set():
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    held = [threading.Thread(target=client, args=("app", "SELECT pg_sleep(6)", False))
            for _ in range(7)]
    held += [threading.Thread(target=client, args=("batch", "SELECT pg_sleep(6)", False))
             for _ in range(2)]
    for t in held:
        t.start()
    window = inuse.Window(seconds=300)
    try:
        wait(lambda: (p := show_pools(bouncer)).get("app", {}).get("cl_waiting") == "3"
             and p.get("batch", {}).get("sv_active") == "2", "7 + 2 clients held", timeout=20)
        reports = ask_once(target)
        pools = show_pools(bouncer)
        pg = pg_servers(stack)
    finally:
        for t in held:
            t.join(timeout=30)
    ledger = inuse.counts(CONSUMERS, bouncers.pools(reports))
    window.add(time.monotonic(), ledger)
    figure("ledger, held load:")
    for alias in CONSUMERS:
        c = ledger[alias]
        figure(f"  {alias}: ledger active {c.server_active} idle {c.server_idle} clients "
              f"{c.clients_active} waiting {c.clients_waiting} | SHOW POOLS sv_active "
              f"{pools[alias]['sv_active']} cl_waiting {pools[alias]['cl_waiting']} | "
              f"pg_stat_activity {pg[alias]}")
    assert ledger["app"] == inuse.Counts(server_active=4, server_idle=0, clients_active=4,
                                         clients_waiting=3)  # fmt: skip
    assert ledger["batch"] == inuse.Counts(server_active=2, server_idle=0, clients_active=2,
                                           clients_waiting=0)  # fmt: skip
    for alias in CONSUMERS:
        assert ledger[alias].server_active == int(pools[alias]["sv_active"])
        assert ledger[alias].clients_waiting == int(pools[alias]["cl_waiting"])
        assert ledger[alias].server_active == pg[alias].get("active", 0)
        assert ledger[alias].server == sum(pg[alias].values())

    # -- churning load: 12 clients of app in short transactions, sampled for 5 s
    churn = [threading.Thread(target=client, args=("app", "SELECT pg_sleep(0.02)", True))
             for _ in range(12)]
    for t in churn:
        t.start()
    rows = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reports = ask_once(target)
            pg = pg_servers(stack)
            now = inuse.counts(CONSUMERS, bouncers.pools(reports))
            window.add(time.monotonic(), now)
            rows.append((now["app"], pg["app"]))
            time.sleep(0.2)
    finally:
        stop.set()
        for t in churn:
            t.join(timeout=30)
    assert not errors, errors
    figure("ledger, churning load (app, pool 4, 12 clients): ledger active/idle/waiting vs "
          "pg_stat_activity active/idle")
    for c, pg_row in rows:
        figure(f"  {c.server_active}/{c.server_idle}/{c.clients_waiting}  vs  "
              f"{pg_row.get('active', 0)}/{pg_row.get('idle', 0)}")
    same = sum(1 for c, pg_row in rows if c.server_active == pg_row.get("active", 0))
    figure(f"  active: ledger == pg_stat_activity in {same} of {len(rows)} samples (taken "
           "a few ms apart: PgBouncer counts a server linked to a client, PostgreSQL one "
           f"running a statement); server connections: equal in {len(rows)} of {len(rows)}")
    # the pool is saturated and keeps its 4 server connections: both sides count 4 each time
    assert all(c.server == 4 == sum(pg_row.values()) for c, pg_row in rows), rows
    assert max(c.clients_waiting for c, _ in rows) > 0  # 12 clients on 4 connections queue
    peaks = window.peaks()
    assert peaks["app"] == (4, max(3, *(c.clients_waiting for c, _ in rows)))
    assert peaks["batch"] == (2, 0)
    status = inuse.status(window, now, "2026-12-03T07:00:00Z", pods=1)
    figure(f"ledger status.inUse from the last churning sample: {status}")
    assert [c["name"] for c in status["consumers"]] == CONSUMERS
    assert status["consumers"][0]["peakServer"] == 4


def _exported_names(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {line.split("{")[0].split()[0] for line in text.splitlines()
            if line and not line.startswith("#")}
