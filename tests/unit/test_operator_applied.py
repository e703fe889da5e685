"""The Applied condition's pure part: whom to ask, what a pod's /metrics says, the verdict.

Worker generations are read from real expositions of the app library's ``PoolMetrics``: one
process, and gunicorn's multiprocess mode with several worker processes writing one directory.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from poolwarden import metrics as app_metrics
from poolwarden_operator import applied

WORKER = """
import sys
from poolwarden.metrics import PoolMetrics
PoolMetrics().generation.set(int(sys.argv[1]))
"""
AGGREGATE = """
import sys
from poolwarden.metrics import PoolMetrics
metrics = PoolMetrics()  # the worker that answers the request aggregates every live worker
if len(sys.argv) > 1:
    metrics.generation.set(int(sys.argv[1]))
sys.stdout.write(metrics.exposition().decode())
"""


def pod(name, ready=True, ip="10.0.0.7", port=8000, terminating=False, port_name="http"):
    meta = {"name": name} | ({"deletionTimestamp": "2026-01-01T00:00:00Z"} if terminating else {})
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "ports": [
            {"name": port_name, "containerPort": port}]}]},
        "status": {"podIP": ip, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def test_only_ready_running_pods_with_the_http_port_are_asked():
    pods = [
        pod("b"),
        pod("a", ip="fd00::5", port=9000),
        pod("not-ready", ready=False),
        pod("leaving", terminating=True),
        pod("no-ip", ip=None),
        pod("no-port", port_name="metrics"),
    ]
    found = applied.targets("web", pods)
    assert found == [
        applied.Target("web", "a", "http://[fd00::5]:9000/metrics"),
        applied.Target("web", "b", "http://10.0.0.7:8000/metrics"),
    ]


def test_one_process_reports_its_generation():
    registry_metrics = app_metrics.PoolMetrics()
    registry_metrics.generation.set(7)
    text = registry_metrics.exposition().decode()
    assert applied.WORKER_GENERATION in text  # the operator reads the library's own name
    assert applied.worker_generations(text) == (7,)


def test_every_worker_of_a_multiprocess_pod_reports_its_generation(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for generation in (4, 5):
        subprocess.run([sys.executable, "-c", WORKER, str(generation)], env=env, check=True)

    def answer(*args):
        return subprocess.run(
            [sys.executable, "-c", AGGREGATE, *args], env=env, check=True, capture_output=True,
            text=True,
        ).stdout  # fmt: skip

    assert sorted(applied.worker_generations(answer("5"))) == [4, 5, 5]
    # a worker that has not observed its plan yet reports 0: it does not confirm anything
    # (the processes above stay counted: only gunicorn's child_exit marks a worker dead)
    assert sorted(applied.worker_generations(answer())) == [0, 4, 5, 5]


def test_no_generation_series_reads_as_no_worker():
    assert applied.worker_generations("# nothing here\n") == ()


EXPECTED = {"web": 5, "worker": 3}
WORKERS = {"web": 2, "worker": 1}


def test_applied_only_when_every_worker_of_every_ready_pod_confirms():
    reports = [
        applied.Report("web", "web-a", (5, 5)),
        applied.Report("web", "web-b", (5, 5)),
        applied.Report("worker", "worker-a", (3,)),
    ]
    c = applied.condition(EXPECTED, WORKERS, reports, 2)
    assert (c["type"], c["status"], c["reason"]) == ("Applied", "True", "AllPodsApplied")
    assert "web=5" in c["message"] and "worker=3" in c["message"]
    assert applied.lagging_pods(EXPECTED, WORKERS, reports) == 0


@pytest.mark.parametrize(
    ("report", "why"),
    [
        (applied.Report("web", "web-b", (5, 4)), "1 of 2 worker(s) on generation 5 (seen: 4,5)"),
        (applied.Report("web", "web-b", (5,)), "1 of 2 worker(s) on generation 5 (seen: 5)"),
        (applied.Report("web", "web-b", ()), "0 of 2 worker(s) on generation 5 (seen: none)"),
        (applied.Report("web", "web-b", (5, 5, 4)), "2 of 2 worker(s) on generation 5 (seen: 4,5)"),
        (applied.Report("web", "web-b", None, "timed out"), "unreachable (timed out)"),
    ],
)
def test_a_pod_lags_when_any_worker_is_behind_missing_or_unreachable(report, why):
    reports = [applied.Report("web", "web-a", (5, 5)), report]
    c = applied.condition(EXPECTED, WORKERS, reports, 2)
    assert (c["status"], c["reason"]) == ("False", "PodsLagging")
    lead = "1 of 2 ready consumer pod(s) not on their plan generation"
    assert c["message"] == f"{lead}: web-b: {why}"


def test_the_lagging_list_is_bounded_and_counts_the_rest():
    reports = [applied.Report("web", f"web-{i:03}", (4, 4)) for i in range(500)]
    c = applied.condition(EXPECTED, WORKERS, reports, 2)
    assert c["status"] == "False"
    assert c["message"].count("web-") == applied.LISTED
    assert c["message"].endswith(f"; and {500 - applied.LISTED} more")
    assert len(c["message"]) <= 1024
    assert applied.lagging_pods(EXPECTED, WORKERS, reports) == 500


def test_no_ready_pod_is_nothing_to_wait_for():
    c = applied.condition(EXPECTED, WORKERS, [], 2)
    assert (c["status"], c["reason"]) == ("True", "NoReadyPods")


async def test_lagging_pods_get_rechecked_with_growing_delays_until_they_confirm():
    from poolwarden_operator import coalesce, retry

    runs: list[float] = []
    loop = asyncio.get_running_loop()
    lagging = {"now": True}
    rechecks: retry.Rechecks

    async def work(key):
        runs.append(loop.time())
        rechecks.after_pass(key, lagging["now"])

    retrier = retry.Retrier(coalesce.Coalescer(work))
    rechecks = retry.Rechecks(retrier, max_delay=0.08, first=0.01)
    await retrier.request("budget")  # the pass that found pods lagging
    while len(runs) < 6:
        await asyncio.sleep(0.01)
    gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
    # each recheck waits at least as long as the one before, doubling up to max_delay
    assert all(g >= 0.01 for g in gaps)
    assert max(gaps[-2:]) >= 0.08 * 0.9
    lagging["now"] = False
    count = len(runs)
    await asyncio.sleep(0.3)  # one more pass may have been pending; then none
    assert len(runs) <= count + 1
    settled = len(runs)
    await asyncio.sleep(0.2)
    assert len(runs) == settled
    await rechecks.close()
    await retrier.close()


class _Pod:
    """A pod's /metrics on 127.0.0.1: a real PoolMetrics behind http.server, or a silent one."""

    def __init__(self, generation=None, silent=False):
        import http.server
        import threading

        registry_metrics = app_metrics.PoolMetrics()
        if generation is not None:
            registry_metrics.generation.set(generation)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if silent:
                    threading.Event().wait(1)
                    return
                body = registry_metrics.exposition() if self.path == "/metrics" else b""
                self.send_response(200 if body else 404)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


async def test_pods_are_asked_over_http_and_failures_are_reports_not_errors():
    from poolwarden_operator import ask

    good, silent = _Pod(generation=6), _Pod(silent=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    try:
        targets = [
            applied.Target("web", "good", f"{good.url}/metrics"),
            applied.Target("web", "missing", f"{good.url}/nothing"),
            applied.Target("web", "silent", f"{silent.url}/metrics"),
            applied.Target("web", "refused", f"http://127.0.0.1:{closed}/metrics"),
        ]
        found = {r.pod: r for r in await ask.reports(targets)}
    finally:
        good.close()
        silent.close()
    assert found["good"].generations == (6,)
    assert found["missing"].generations is None and found["missing"].error == "ValueError"
    assert found["silent"].generations is None and found["silent"].error == "no answer in time"
    assert found["refused"].generations is None and "Error" in found["refused"].error
