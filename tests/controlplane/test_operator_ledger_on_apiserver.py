"""The PgBouncer ledger with real parts end to end, but no kubelet: a real kube-apiserver, the
operator with its ServiceAccount (the chart's Role and admission policies), and a real
PgBouncer 1.24 with Debian's exporter from the trixie root on 127.0.0.1, which the PgBouncer
pod object points at (``podIP`` 127.0.0.1, container port ``metrics``, Ready set by hand).
The test plays the kubelet: it copies the operator's sizing ConfigMap into PgBouncer's sizing
dir, and PgBouncer RELOADs it as it does in its image.

- ``Applied`` is False while PgBouncer runs without the sizing file (the alias missing) and
  True once it reloaded it; ``status.pgbouncer.readyPods`` and ``status.applied`` say so.
- Clients held in PgBouncer show in ``status.inUse``, the In-Use/Waiting columns and the
  operator's in-use series; ``status.inUse`` patches start no reconcile pass.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_operator import (  # noqa: F401  (fixtures)
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

from poolwarden import pgbouncer_ini
from poolwarden_operator import metrics

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "devstack"))
import devstack  # noqa: E402

KUBECTL = REPO / ".tools" / "bin" / "kubectl"


@pytest.fixture
def bouncer(tmp_path, monkeypatch):
    """PostgreSQL 17, PgBouncer 1.24 and Debian's PgBouncer exporter from the trixie root."""
    if not (devstack.ROOT / ".poolwarden-rootfs").exists():
        pytest.fail(f"needs the trixie root at {devstack.ROOT}: make trixie-root", pytrace=False)
    stack = devstack.Stack(state=tmp_path / "stack", pg_port=devstack.free_port(),
                           bouncer_port=devstack.free_port(), app_port=devstack.free_port())
    stack.state.mkdir()
    try:
        stack.start_postgres(max_connections=40)
        pgb = stack.start_pgbouncer(PGBOUNCER_SERVER_IDLE_TIMEOUT="600")
        port = devstack.free_port()
        monkeypatch.setenv(
            "PGBOUNCER_EXPORTER_CONNECTION_STRING",
            f"postgres://pgbouncer_stats:{stack.stats_password}@127.0.0.1:{pgb.port}/pgbouncer"
            "?sslmode=disable",
        )
        stack._spawn("exporter", stack.chroot_cmd(
            "prometheus-pgbouncer-exporter", f"--web.listen-address=127.0.0.1:{port}"))
        monkeypatch.delenv("PGBOUNCER_EXPORTER_CONNECTION_STRING")
        wait_for("the exporter", lambda: devstack.port_open(port), timeout=30)
        yield stack, pgb, port
    finally:
        devstack.stop(stack)


def make_pgbouncer(cluster, port):  # noqa: F811
    """The PgBouncer Deployment; its one pod marked Ready at 127.0.0.1 with the exporter's port."""
    labels = {"app": "pgbouncer"}
    cluster.apps.create_namespaced_deployment(cluster.ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pgbouncer"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [
                {"name": "pgbouncer", "image": "poolwarden.invalid/none:0",
                 "ports": [{"name": "pgbouncer", "containerPort": 6432}]},
                {"name": "metrics", "image": "poolwarden.invalid/none:0",
                 "ports": [{"name": "metrics", "containerPort": port}]},
            ]},
        }},
    })  # fmt: skip
    pods = wait_for("the PgBouncer pod", lambda: cluster.pods("app=pgbouncer"))
    name = pods[0]["metadata"]["name"]
    cluster.core.patch_namespaced_pod_status(name, cluster.ns, {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }})  # fmt: skip
    return name


def scrape(op):
    found = {}
    for family in text_string_to_metric_families(op.metrics_text()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def passes(op, ns):
    return scrape(op).get(
        (f"{metrics.BUDGET_PASSES}_total", (("budget", "budget"), ("namespace", ns))), 0)


def test_pgbouncer_pods_confirm_their_sizing_and_report_what_is_in_use(
    cluster, run_operator, bouncer, monkeypatch, control_plane,  # noqa: F811
):  # fmt: skip
    stack, pgb, port = bouncer
    monkeypatch.setenv("POOLWARDEN_LEDGER_INTERVAL", "1")
    monkeypatch.setenv("POOLWARDEN_LEDGER_STATUS_INTERVAL", "2")
    monkeypatch.setenv("POOLWARDEN_LEDGER_WINDOW", "60")
    pod = make_pgbouncer(cluster, port)
    cluster.make_deployment("app", 1)  # its pod never gets Ready here: not asked
    # budget 6 over 1 PgBouncer pod + 1 surge: max_db_connections 3, all of it the alias web's pool
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ConnectionBudget",
        "metadata": {"name": "budget"},
        "spec": {
            "database": {"maxConnections": 16, "reserved": 10, "host": "127.0.0.1",
                         "port": stack.pg_port, "name": devstack.APP_DB},
            "pgbouncer": {"deployment": "pgbouncer"},
            # the consumer web (its alias); the database itself is PgBouncer's entry app
            "consumers": [{"name": "web", "deployment": "app", "workersPerPod": 1}],
        },
    })  # fmt: skip
    op = run_operator()

    def applied_is(value):
        c = cluster.condition("Applied")
        return c if c and c["status"] == value else None

    lagging = wait_for("Applied False: PgBouncer has no sizing file yet",
                       lambda: applied_is("False"))  # fmt: skip
    assert lagging["reason"] == "PodsLagging"
    assert f"{pod}: " in lagging["message"] and "alias web missing" in lagging["message"]
    status = cluster.budget()["status"]
    assert status["applied"]["pgbouncerLagging"] == [pod]
    assert status["pgbouncer"]["readyPods"][0]["applied"] is False

    # the kubelet's part: the sizing ConfigMap lands in PgBouncer's sizing dir; it RELOADs
    text, _ = cluster.configmap_text("budget-pgbouncer-sizing", pgbouncer_ini.FILE_NAME)
    pgb.write_sizing(text)
    done = wait_for("Applied True once PgBouncer runs the sizing file",
                    lambda: applied_is("True"), timeout=60)  # fmt: skip
    assert done["reason"] == "NoReadyPods"  # no ready consumer pod; PgBouncer's confirmed
    assert "the 1 ready PgBouncer pod(s) run sizing generation" in done["message"]
    status = cluster.budget()["status"]
    generation = status["files"]["budget-pgbouncer-sizing"]["generation"]
    assert status["pgbouncer"]["readyPods"] == [
        {"name": pod, "applied": True, "generation": generation}]
    assert {k: status["applied"][k] for k in ("pgbouncerPods", "pgbouncerLaggingPods",
                                               "pgbouncerLagging")} == {
        "pgbouncerPods": 1, "pgbouncerLaggingPods": 0, "pgbouncerLagging": []}
    assert pgbouncer_ini.parse(text).databases[0].pool_size == 3

    # -- in use: 5 clients on the alias web, whose pool is 3: 3 active, 2 waiting
    wait_for("no pass in flight", lambda: _settled(op, cluster.ns), timeout=30, interval=0.5)
    before = passes(op, cluster.ns)
    errors = []

    def client():
        try:
            with psycopg.connect(
                f"postgresql://{devstack.APP_USER}:{stack.app_password}@127.0.0.1:{pgb.port}/web",
                connect_timeout=10, autocommit=True, application_name="ledger-cp",
            ) as c:
                c.execute("SELECT pg_sleep(8)")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(5)]
    for t in threads:
        t.start()
    try:
        held = wait_for(
            "status.inUse: 3 active, 2 waiting",
            lambda: (u := cluster.budget()["status"].get("inUse")) and u["serverActive"] == 3
            and u["clientsWaiting"] == 2 and u, timeout=30, interval=0.3,
        )
        series = scrape(op)
        table = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(control_plane.kubeconfig), "-n", cluster.ns,
             "get", "connectionbudget", "-o", "wide"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    sys.stdout.write(f"\nkubectl get connectionbudget -o wide:\n{table.stdout}{table.stderr}")
    sys.stdout.write(f"status.inUse under load: {held}\n")
    assert held["consumers"][0] | {"peakServer": 0} == {
        "name": "web", "serverActive": 3, "serverIdle": 0, "clientsActive": 3,
        "clientsWaiting": 2, "peakServer": 0, "peakWaiting": 2,
    }  # fmt: skip
    assert held["pgbouncerPods"] == 1 and held["windowSeconds"] == 60
    header, row = table.stdout.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert (columns["IN-USE"], columns["WAITING"], columns["APPLIED"]) == ("3", "2", "True")
    labels = (("budget", "budget"), ("consumer", "web"), ("namespace", cluster.ns))
    assert series[(metrics.CONSUMER_SERVER_CONNECTIONS, (*labels[:2], labels[2],
                                                         ("state", "active")))] == 3
    assert series[(metrics.CONSUMER_CLIENTS_WAITING, labels)] == 2
    assert series[(metrics.BUDGET_PGBOUNCER_PODS_LAGGING,
                   (("budget", "budget"), ("namespace", cluster.ns)))] == 0  # fmt: skip

    # the load is gone: the servers stay idle in the pool, the peaks remember the load
    after = wait_for(
        "status.inUse after the load",
        lambda: (u := cluster.budget()["status"]["inUse"]) and u["serverActive"] == 0 and u,
        timeout=30, interval=0.3,
    )
    sys.stdout.write(f"status.inUse after the load: {after}\n")
    app = after["consumers"][0]
    assert (app["serverIdle"], app["clientsWaiting"], app["peakServer"], app["peakWaiting"]) == (
        3, 0, 3, 2)
    # at least two status.inUse patches, and no pass started by them
    assert after["sampledAt"] != held["sampledAt"] or after != held
    assert passes(op, cluster.ns) == before, "a status.inUse patch started a reconcile pass"


def _settled(op, ns):
    """No pass for two seconds (Applied True: no recheck pending)."""
    first = passes(op, ns)
    time.sleep(2)
    return passes(op, ns) == first
