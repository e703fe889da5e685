"""What the operator reads from a PgBouncer pod's exporter and how it judges it.

The exposition is a real one: Debian's prometheus-pgbouncer-exporter 0.10.2 against PgBouncer
1.24.1 from the trixie root (tests/unit/pgbouncer_exporter_0.10.2.prom says with what sizing);
tests/integration/test_ledger.py reads a live one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import threading
from pathlib import Path

import pytest

from poolwarden import pgbouncer_ini
from poolwarden_operator import applied, ask, bouncers

EXPOSITION = (Path(__file__).parent / "pgbouncer_exporter_0.10.2.prom").read_text()


def sizing(app=4, worker=2, max_db=12, max_user=12, max_client=100, port=48961):
    def alias(name, pool):
        return pgbouncer_ini.Database(name, "127.0.0.1", port, "app", pool)

    return pgbouncer_ini.Sizing(
        default_pool_size=9, max_db_connections=max_db, reserve_pool_size=0,
        max_client_conn=max_client, max_user_connections=max_user,
        databases=(alias("app", app), alias("worker", worker)),
    )  # fmt: skip


def pod(name, ready=True, ip="10.0.0.9", port_name="metrics", terminating=False):
    meta = {"name": name} | ({"deletionTimestamp": "2026-01-01T00:00:00Z"} if terminating else {})
    return {
        "metadata": meta,
        "spec": {"containers": [
            {"name": "pgbouncer", "ports": [{"name": "pgbouncer", "containerPort": 6432}]},
            {"name": "metrics", "ports": [{"name": port_name, "containerPort": 9127}]},
        ]},
        "status": {"podIP": ip, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def test_the_exporter_gives_each_alias_its_pool_size_and_limits():
    got = bouncers.parse(EXPOSITION)
    assert got.up
    assert (got.max_user_connections, got.max_client_conn) == (12, 100)
    assert got.aliases["app"] == bouncers.Alias("127.0.0.1", 48961, "app", 4, 12)
    assert got.aliases["worker"] == bouncers.Alias("127.0.0.1", 48961, "app", 2, 12)
    assert got.pools["app"] == bouncers.Pool(sv_active=4, cl_active=4, cl_waiting=2)
    assert got.pools["worker"] == bouncers.Pool(sv_active=1, cl_active=1)


def test_a_pod_on_its_sizing_file_confirms_it():
    assert bouncers.judge(bouncers.parse(EXPOSITION), sizing()) == []


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        (sizing(app=5), "alias app pool_size 4, sizing file 5"),
        (sizing(max_db=10), "alias app max_db_connections 12, sizing file 10"),
        (sizing(max_user=10), "max_user_connections 12, sizing file 10"),
        (sizing(max_client=200), "max_client_conn 100, sizing file 200"),
        (sizing(port=5432), "alias app port 48961, sizing file 5432"),
    ],
)
def test_each_difference_from_the_sizing_file_is_named(wanted, message):
    assert message in bouncers.judge(bouncers.parse(EXPOSITION), wanted)


def test_an_alias_the_pod_does_not_have_yet_is_named():
    wanted = dataclasses.replace(sizing(), databases=(
        *sizing().databases, pgbouncer_ini.Database("batch", "127.0.0.1", 48961, "app", 1)))
    assert bouncers.judge(bouncers.parse(EXPOSITION), wanted) == [
        "alias batch missing, sizing file pool_size 1"]


def test_an_exporter_that_cannot_reach_pgbouncer_confirms_nothing():
    down = "# TYPE pgbouncer_up gauge\npgbouncer_up 0\n"
    assert bouncers.judge(bouncers.parse(down), sizing()) == [
        "the exporter cannot read PgBouncer (pgbouncer_up 0)"]
    assert bouncers.pools([bouncers.Report("p", bouncers.parse(down))]) == {}


def test_text_that_is_no_exposition_is_refused():
    with pytest.raises(ValueError, match="exposition"):
        bouncers.parse('pgbouncer_up{database="x" 1\n')


def test_only_ready_pods_with_the_metrics_port_are_asked_the_others_named():
    pods = [pod("b"), pod("a", ip="fd00::1"), pod("off", port_name="other"),
            pod("starting", ready=False), pod("leaving", terminating=True)]
    found, unconfirmable = bouncers.targets(pods)
    assert found == [bouncers.Target("a", "http://[fd00::1]:9127/metrics"),
                     bouncers.Target("b", "http://10.0.0.9:9127/metrics")]
    assert unconfirmable == ["off"]


def consumers_applied():
    return applied.condition({"app": 3}, {"app": 1}, [applied.Report("app", "app-1", (3,))], 5)


def test_applied_is_true_only_when_every_pgbouncer_pod_confirms_too():
    scrape = bouncers.parse(EXPOSITION)
    good = bouncers.judged([bouncers.Report("pgb-a", scrape)], sizing(), 7)
    both = bouncers.condition(consumers_applied(), good)
    assert both["status"] == "True" and both["reason"] == "AllPodsApplied"
    assert "the 1 ready PgBouncer pod(s) run sizing generation 7" in both["message"]

    behind = bouncers.judged(
        [bouncers.Report("pgb-a", scrape), bouncers.Report("pgb-b", None, "no answer in time")],
        sizing(app=5), 8,
    )
    lagging = bouncers.condition(consumers_applied(), behind)
    assert (lagging["status"], lagging["reason"]) == ("False", "PodsLagging")
    assert lagging["message"] == (
        "2 of 2 ready PgBouncer pod(s) not on sizing generation 8: pgb-a: alias app pool_size 4, "
        "sizing file 5; pgb-b: unreachable (no answer in time)"
    )
    assert bouncers.summary(behind) == {
        "pgbouncerPods": 2, "pgbouncerLaggingPods": 2, "pgbouncerLagging": ["pgb-a", "pgb-b"]}
    assert bouncers.pods_status(behind) == [
        {"name": "pgb-a", "applied": False, "message": "alias app pool_size 4, sizing file 5"},
        {"name": "pgb-b", "applied": False, "message": "unreachable (no answer in time)"},
    ]
    assert bouncers.pods_status(good) == [{"name": "pgb-a", "applied": True, "generation": 7}]


def test_consumer_pods_lagging_stay_named_first():
    consumers = applied.condition({"app": 3}, {"app": 1}, [applied.Report("app", "app-1", (2,))], 5)
    behind = bouncers.judged([bouncers.Report("pgb-a", None, "ClientConnectorError")], sizing(), 3)
    got = bouncers.condition(consumers, behind)
    assert got["status"] == "False"
    assert got["message"].startswith("1 of 1 ready consumer pod(s) not on their plan generation")
    assert "1 of 1 ready PgBouncer pod(s) not on sizing generation 3" in got["message"]


def test_pgbouncer_pods_without_an_exporter_say_which_value_to_set():
    j = bouncers.judged([], sizing(), 3, ["pgb-x"])
    got = bouncers.condition(consumers_applied(), j)
    assert got["status"] == "True"
    assert ("PgBouncer pod(s) pgb-x not confirmable: no container port named metrics (set "
            "pgbouncer.metrics.enabled=true), so Applied covers the consumer pods only"
            ) in got["message"]  # fmt: skip


def test_lists_stay_bounded_and_keep_the_lagging_pods():
    scrape = bouncers.parse(EXPOSITION)
    reports = [bouncers.Report(f"pgb-{i:02}", scrape) for i in range(30)]
    reports += [bouncers.Report(f"pgb-{i}", None, "no answer in time") for i in (30, 31, 32)]
    j = bouncers.judged(reports, sizing(), 4, [f"off-{i}" for i in range(20)])
    listed = bouncers.pods_status(j)
    assert len(listed) == applied.LISTED
    assert [p["name"] for p in listed if not p["applied"]] == ["pgb-30", "pgb-31", "pgb-32"]
    assert listed == sorted(listed, key=lambda p: p["name"])
    summary = bouncers.summary(j)
    assert (summary["pgbouncerPods"], summary["pgbouncerLaggingPods"]) == (33, 3)
    assert len(bouncers.condition(consumers_applied(), j)["message"]) <= 1024


def test_pools_are_summed_over_pods_and_users():
    scrape = bouncers.parse(EXPOSITION)
    two = bouncers.pools([bouncers.Report("a", scrape), bouncers.Report("b", scrape),
                          bouncers.Report("c", None, "refused")])
    assert two["app"] == bouncers.Pool(sv_active=8, cl_active=8, cl_waiting=4)
    assert two["app"].server_idle == 0


class Exporter:
    """Serves the captured exposition on 127.0.0.1 like the sidecar (or a 404, or nothing)."""

    def __init__(self, status=200):
        body = EXPOSITION.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_ask_reads_each_exporter_once_and_reports_who_did_not_answer():
    good, missing = Exporter(), Exporter(status=404)
    try:
        got = asyncio.run(ask.bouncer_reports([
            bouncers.Target("good", good.url), bouncers.Target("missing", missing.url),
            bouncers.Target("gone", "http://127.0.0.1:1/metrics"),
        ]))  # fmt: skip
    finally:
        good.close()
        missing.close()
    by_pod = {r.pod: r for r in got}
    assert by_pod["good"].scrape == bouncers.parse(EXPOSITION)
    assert (by_pod["missing"].scrape, by_pod["missing"].error) == (None, "ValueError")
    assert by_pod["gone"].scrape is None and by_pod["gone"].error
