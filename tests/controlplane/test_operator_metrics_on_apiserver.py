"""The operator's Prometheus endpoint, scraped while it runs against a real kube-apiserver.

The operator runs as in test_operator.py (its ServiceAccount, the chart's Role and admission
policies). The series are read over HTTP from ``/metrics`` and compared with the budget's status
as the API server stores it; the apiserver's own ``/metrics`` counts the operator's ConfigMap
reads, one per owned ConfigMap per pass.
"""

from __future__ import annotations

import http.server
import threading
import time

from prometheus_client.parser import text_string_to_metric_families
from test_operator import (  # noqa: F401  (fixtures)
    CLIENTS,
    GROUP,
    PLURAL,
    VERSION,
    admin,
    cluster,
    crd,
    operator_account,
    rbac_documents,
    rbac_values,
    render_rbac,
    run_operator,
    wait_for,
)

from poolwarden import metrics as app_metrics
from poolwarden_operator import metrics

CONSUMERS = [
    {"name": "app", "deployment": "app", "workersPerPod": 2},
    {"name": "worker", "deployment": "worker", "workersPerPod": 1, "overflow": "half"},
]


def scrape(op) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of the operator's endpoint."""
    found = {}
    for family in text_string_to_metric_families(op.metrics_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def budget_labels(namespace, name="budget"):
    return (("budget", name), ("namespace", namespace))


def consumer_labels(namespace, consumer, name="budget"):
    return (("budget", name), ("consumer", consumer), ("namespace", namespace))


def ready(cluster, generation_above=0):  # noqa: F811
    status = cluster.budget().get("status") or {}
    if (status.get("planGeneration") or 0) <= generation_above:
        return None
    if status.get("observedGeneration") != cluster.budget()["metadata"]["generation"]:
        return None
    return status


def agrees(op, cluster, status):  # noqa: F811
    """The scrape once it shows ``status``'s generation: every series equals the status."""
    got = scrape(op)
    b = budget_labels(cluster.ns)
    if got.get((metrics.BUDGET_PLAN_GENERATION, b)) != status["planGeneration"]:
        return None
    return got


def check_against_status(got, cluster, status, spec):  # noqa: F811
    b = budget_labels(cluster.ns)
    database = spec["database"]
    assert got[(metrics.BUDGET_CONNECTIONS, b)] == database["maxConnections"] - database["reserved"]
    assert got[(metrics.BUDGET_CONNECTIONS, b)] == status["budget"]
    assert got[(metrics.BUDGET_SERVER_CONNECTIONS_PLANNED, b)] == status["serverTotal"]
    assert got[(metrics.BUDGET_UTILIZATION, b)] == float(status["utilization"])
    over = status["state"] == "Overcommitted"
    assert got[(metrics.BUDGET_OVERCOMMITTED, b)] == (1 if over else 0)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert got[(metrics.BUDGET_READY, b)] == (1 if conditions["Ready"] == "True" else 0)
    for c in status["consumers"]:
        labels = consumer_labels(cluster.ns, c["name"])
        assert got[(metrics.CONSUMER_SERVER_POOL, labels)] == c["serverPool"]
        assert got[(metrics.CONSUMER_POOL_SIZE, labels)] == c["poolSize"]
        assert got[(metrics.CONSUMER_MAX_OVERFLOW, labels)] == c["maxOverflow"]
    names = {name for name, labels in got if ("namespace", cluster.ns) in labels}
    # no PgBouncer pod serves an exporter here: the in-use series need one
    # (test_operator_ledger_on_apiserver.py)
    assert names == set(metrics.EXPOSED) - set(metrics.IN_USE)


def test_metrics_follow_the_plan_from_first_pass_to_deletion(cluster, run_operator):  # noqa: F811
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 2)
    cluster.make_deployment("worker", 1)
    # few client connections: the app's scale below changes its pools (the client side decides)
    cluster.make_budget(consumers=CONSUMERS, maxClientConn=CLIENTS)
    op = run_operator()
    status = wait_for("the first plan", lambda: ready(cluster))
    got = wait_for("the first plan in the metrics", lambda: agrees(op, cluster, status))
    check_against_status(got, cluster, status, cluster.budget()["spec"])
    assert got[(metrics.BUDGET_READY, budget_labels(cluster.ns))] == 1
    assert got[(metrics.BUDGET_OVERCOMMITTED, budget_labels(cluster.ns))] == 0

    # a scale that changes the plan: new generation, new pools, in the metrics too
    before = status
    cluster.scale("app", 8)
    status = wait_for("the plan for 8 app pods", lambda: ready(cluster, before["planGeneration"]))
    got = wait_for("the new plan in the metrics", lambda: agrees(op, cluster, status))
    check_against_status(got, cluster, status, cluster.budget()["spec"])
    app = consumer_labels(cluster.ns, "app")
    assert got[(metrics.CONSUMER_POOL_SIZE, app)] == next(
        c["poolSize"] for c in status["consumers"] if c["name"] == "app"
    )

    # too few client connections for every worker: overcommitted, in status and metrics
    before = status
    cluster.patch_budget("budget", {"pgbouncer": {"maxClientConn": 5}})
    status = wait_for(
        "the overcommitted plan",
        lambda: (
            (s := ready(cluster, before["planGeneration"])) and s["state"] == "Overcommitted" and s
        ),
    )
    got = wait_for("overcommitted in the metrics", lambda: agrees(op, cluster, status))
    check_against_status(got, cluster, status, cluster.budget()["spec"])
    assert got[(metrics.BUDGET_OVERCOMMITTED, budget_labels(cluster.ns))] == 1

    # deleted: its series go (one more pass finds it gone)
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL, "budget")
    wait_for(
        "the deleted budget's series to disappear",
        lambda: not [k for k in scrape(op) if ("namespace", cluster.ns) in k[1]],
    )


def configmap_gets(api, server) -> float:
    """GET requests for single ConfigMaps the apiserver has served, every client and code."""
    response = api.rest_client.pool_manager.request("GET", f"{server}/metrics")
    assert response.status == 200, response.status
    total = 0.0
    for family in text_string_to_metric_families(response.data.decode()):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "apiserver_request_total"
                and labels.get("verb") == "GET"
                and labels.get("resource") == "configmaps"
                and labels.get("scope") == "resource"
            ):
                total += sample.value
    return total


def test_each_owned_configmap_is_read_once_per_pass(
    cluster,  # noqa: F811
    run_operator,  # noqa: F811
    admin,  # noqa: F811
    control_plane,  # noqa: F811
):
    """Three owned ConfigMaps (two plans and PgBouncer's sizing): three GETs per pass, counted
    by the apiserver, whatever the number of passes the events cause."""
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 2)
    cluster.make_deployment("worker", 1)
    cluster.make_budget(consumers=CONSUMERS)
    op = run_operator()
    status = wait_for("the first plan", lambda: ready(cluster))
    wait_for("the first plan in the metrics", lambda: agrees(op, cluster, status))
    passes = f"{metrics.BUDGET_PASSES}_total"
    key = (passes, budget_labels(cluster.ns))

    def settled():
        """(passes, GETs) once three reads a second apart agree (no pass in flight: on a
        loaded machine a pass can take longer than half a second between its first GET and
        the count of passes)."""
        reads = []
        for _ in range(3):
            reads.append((scrape(op)[key], configmap_gets(admin, control_plane.server)))
            time.sleep(1.0)
        return reads[0] if reads[0] == reads[1] == reads[2] else None

    passes_before, gets_before = wait_for("no pass in flight", settled, interval=0.2)
    for replicas in (3, 5, 7, 9):
        cluster.scale("app", replicas)
    wait_for(
        "the plan for 9 app pods",
        lambda: (s := ready(cluster)) and s["replicas"] == 9 + 1 and s,
    )
    passes_after, gets_after = wait_for("no pass in flight", settled, interval=0.2)
    ran = passes_after - passes_before
    assert ran >= 1
    assert gets_after - gets_before == 3 * ran, (
        f"{gets_after - gets_before:.0f} ConfigMap GETs in {ran:.0f} pass(es) of a budget "
        "owning 3 ConfigMaps: each must be read exactly once per pass"
    )


class Workers:
    """A consumer pod's /metrics as the app library serves it (a real ``PoolMetrics``), on
    127.0.0.1: the pods below point their ``http`` port and ``podIP`` at it."""

    def __init__(self) -> None:
        self.metrics = app_metrics.PoolMetrics()
        self.metrics.generation.set(0)  # a worker that has not read its plan yet
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = outer.metrics.exposition() if self.path == "/metrics" else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", app_metrics.CONTENT_TYPE)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_ready_consumer(cluster, name, replicas, port):  # noqa: F811
    """A Deployment whose pods (no kubelet here) are marked Ready by hand at 127.0.0.1."""
    labels = {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "main", "image": "poolwarden.invalid/none:0",
                    "ports": [{"name": "http", "containerPort": port}],
                }]},
            },
        },
    }  # fmt: skip
    cluster.apps.create_namespaced_deployment(cluster.ns, body)
    pods = wait_for(
        f"{replicas} pods of {name}",
        lambda: len(found := cluster.pods(f"app={name}")) == replicas and found,
    )
    for pod in pods:
        cluster.core.patch_namespaced_pod_status(
            pod["metadata"]["name"],
            cluster.ns,
            {"status": {
                "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }},
        )  # fmt: skip
    return sorted(p["metadata"]["name"] for p in pods)


def test_applied_waits_for_every_ready_pod_to_confirm_its_plan(cluster, run_operator):  # noqa: F811
    workers = Workers()
    try:
        cluster.make_deployment("pgbouncer", 1)
        pods = make_ready_consumer(cluster, "app", 2, workers.port)
        cluster.make_budget(consumers=[{"name": "app", "deployment": "app", "workersPerPod": 1}])
        op = run_operator()
        b = budget_labels(cluster.ns)

        def applied_is(value):
            condition = cluster.condition("Applied")
            return condition if condition and condition["status"] == value else None

        lagging = wait_for(
            "Applied False: the pods report generation 0", lambda: applied_is("False")
        )
        assert lagging["reason"] == "PodsLagging"
        for pod in pods:
            assert f"{pod}: 0 of 1 worker(s) on generation" in lagging["message"]
        status = cluster.budget()["status"]
        # the PgBouncer pod is not ready (no kubelet): only the consumer pods are asked
        assert status["applied"] == {"readyPods": 2, "laggingPods": 2, "lagging": pods,
                                     "pgbouncerPods": 0, "pgbouncerLaggingPods": 0,
                                     "pgbouncerLagging": []}  # fmt: skip
        got = wait_for(
            "the lagging pods in the metrics",
            lambda: (m := scrape(op)).get((metrics.BUDGET_PODS_LAGGING, b)) == 2 and m,
        )
        assert got[(metrics.BUDGET_PLAN_APPLIED, b)] == 0

        # the workers read the plan: no event reaches the operator, its recheck finds them
        workers.metrics.generation.set(status["files"]["budget-app-plan"]["generation"])
        done = wait_for("Applied True once every worker confirms", lambda: applied_is("True"))
        assert done["reason"] == "AllPodsApplied"
        assert cluster.budget()["status"]["applied"] == {
            "readyPods": 2, "laggingPods": 0, "lagging": [],
            "pgbouncerPods": 0, "pgbouncerLaggingPods": 0, "pgbouncerLagging": [],
        }  # fmt: skip
        got = wait_for(
            "applied in the metrics",
            lambda: (m := scrape(op)).get((metrics.BUDGET_PLAN_APPLIED, b)) == 1 and m,
        )
        assert got[(metrics.BUDGET_PODS_LAGGING, b)] == 0
    finally:
        workers.close()
