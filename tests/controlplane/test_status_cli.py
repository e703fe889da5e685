"""`poolwarden status` against a real kube-apiserver: the ledger a user prints for a budget.

The CRD is the chart's; the budget's status is patched through the status subresource in the
ledger's shape (docs/operator.md: ``applied``, ``pgbouncer.readyPods``, ``inUse``), its plan and
sizing ConfigMaps are rendered by the library, and the installed ``poolwarden`` script is run
with a kubeconfig as a user runs it. Errors: no such budget, and a user without RBAC, who is
told what to grant; granted exactly that, the same user reads the ledger. And a budget the
real operator planned (its own ServiceAccount, the chart's rules) prints the plan it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes
from test_operator import (  # noqa: F401  (fixtures)
    GROUP,
    MERGE,
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

from poolwarden import pgbouncer_ini, planfile

POOLWARDEN = Path(sys.executable).parent / "poolwarden"
CONSUMERS = [
    {"name": "app", "deployment": "shop-app", "workersPerPod": 2},
    {"name": "worker", "deployment": "shop-worker", "workersPerPod": 1},
]
STATUS = {
    "state": "Ready", "planGeneration": 3, "observedGeneration": 1, "budget": 90,
    "serverTotal": 90, "utilization": "1.00", "replicas": 6,
    "poolPerWorker": "app=17+0 worker=22+0",
    "consumers": [
        {"name": "app", "replicas": 4, "surge": 1, "serverPool": 34, "poolSize": 17,
         "maxOverflow": 0},
        {"name": "worker", "replicas": 2, "surge": 0, "serverPool": 11, "poolSize": 22,
         "maxOverflow": 0},
    ],
    "pgbouncer": {
        "replicas": 2, "surge": 0, "maxDbConnections": 45, "maxUserConnections": 45,
        "defaultPoolSize": 41, "reservePoolSize": 4, "maxClientConn": 1000,
        "terminatingHeld": {},
        "pods": 2,
        "readyPods": [
            {"name": "shop-pgbouncer-6f7d-abcde", "applied": True, "generation": 3},
            {"name": "shop-pgbouncer-6f7d-xyz12", "applied": False,
             "message": "alias app pool_size 3, sizing file 34"},
        ],
    },
    "applied": {
        "readyPods": 6, "laggingPods": 1, "lagging": ["shop-app-7c9f8-k2x4p"],
        "pgbouncerPods": 2, "pgbouncerLaggingPods": 1,
        "pgbouncerLagging": ["shop-pgbouncer-6f7d-xyz12"],
    },
    "inUse": {
        "sampledAt": "2026-12-03T07:00:00Z", "windowSeconds": 300, "pgbouncerPods": 2,
        "serverActive": 12,
        "serverIdle": 3, "clientsWaiting": 4,
        "consumers": [
            {"name": "app", "serverActive": 9, "serverIdle": 2, "clientsActive": 9,
             "clientsWaiting": 4, "peakServer": 30, "peakWaiting": 6},
            {"name": "worker", "serverActive": 3, "serverIdle": 1, "clientsActive": 3,
             "clientsWaiting": 0, "peakServer": 11, "peakWaiting": 0},
        ],
    },
    "files": {"budget-app-plan": {"digest": "x", "generation": 3},
              "budget-worker-plan": {"digest": "y", "generation": 3},
              "budget-pgbouncer-sizing": {"digest": "z", "generation": 3}},
    "conditions": [
        {"type": "Applied", "status": "False", "reason": "PodsLagging", "message": "1 of 6"},
        {"type": "Ready", "status": "True", "reason": "PlanApplied", "message": "applied"},
    ],
}  # fmt: skip


def poolwarden(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run([str(POOLWARDEN), *map(str, args)], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip


def row(out: str, first: str) -> list[str]:
    return next(line for line in out.splitlines() if line.split()[:1] == [first]).split()


def write_files(cluster) -> None:  # noqa: F811
    sizing = pgbouncer_ini.Sizing(41, 45, 4, 1000, 45, (
        pgbouncer_ini.Database("app", "pg.example", 5432, "shop", 34),
        pgbouncer_ini.Database("worker", "pg.example", 5432, "shop", 11),
    ))  # fmt: skip
    files = {
        "budget-app-plan": {planfile.FILE_NAME: planfile.render(
            planfile.PoolPlan(17, 0, 3, f"{cluster.ns}/budget", "app"))},
        "budget-worker-plan": {planfile.FILE_NAME: planfile.render(
            planfile.PoolPlan(22, 0, 3, f"{cluster.ns}/budget", "worker"))},
        "budget-pgbouncer-sizing": {pgbouncer_ini.FILE_NAME: pgbouncer_ini.render(
            sizing, budget=f"{cluster.ns}/budget", generation=3)},
    }  # fmt: skip
    for name, data in files.items():
        cluster.core.create_namespaced_config_map(cluster.ns, {"metadata": {"name": name},
                                                               "data": data})  # fmt: skip


def test_status_prints_the_ledger_from_the_apiserver(cluster, control_plane):  # noqa: F811
    cluster.make_budget(consumers=CONSUMERS)
    kubeconfig = control_plane.kubeconfig
    before = poolwarden("status", "--kubeconfig", kubeconfig, "-n", cluster.ns)
    assert before.returncode == 0, before
    assert "state not planned yet" in before.stdout.splitlines()[0]
    assert "in use: not sampled yet" in before.stdout.splitlines()

    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, cluster.ns, PLURAL, "budget", {"status": STATUS}, _content_type=MERGE
    )
    write_files(cluster)
    stored = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL,
                                                         "budget")["status"]  # fmt: skip
    result = poolwarden("status", "--kubeconfig", kubeconfig, "-n", cluster.ns, "budget")
    assert result.returncode == 0, result
    out = result.stdout
    sys.stdout.write(out)  # the sample in the report (shown with -rP)
    lines = out.splitlines()
    assert lines[0].split() == ["ConnectionBudget", f"{cluster.ns}/budget", "state", "Ready",
                                "plan", "generation", "3", "applied", "False", "(PodsLagging)"]
    assert lines[1] == ("budget 90 (max_connections 100 - reserved 10); planned 90 server "
                        "connections in steady state, utilization 1.00")
    assert lines[2].startswith("in use 15 of 90 server connections (12 active, 3 idle, 17% of "
                               "the budget), 4 clients waiting; sampled 2026-12-03T07:00:00Z")
    assert row(out, "app") == ["app", "4+1", "34", "17+0", "gen", "3", "1",
                               "9", "2", "9", "4", "30", "6"]
    assert row(out, "worker") == ["worker", "2+0", "11", "22+0", "gen", "3", "0",
                                  "3", "1", "3", "0", "11", "0"]
    assert "consumer pods applied: 5 of 6 ready; lagging: shop-app-7c9f8-k2x4p" in lines
    assert ("sizing file budget-pgbouncer-sizing generation 3: max_db_connections 45, "
            "max_user_connections 45; pool_size per alias: app 34, worker 11") in lines
    assert row(out, "shop-pgbouncer-6f7d-abcde") == ["shop-pgbouncer-6f7d-abcde", "yes", "3",
                                                     "45"]
    assert row(out, "shop-pgbouncer-6f7d-xyz12")[:4] == ["shop-pgbouncer-6f7d-xyz12", "no",
                                                         "-", "45"]
    # The chart's CRD before the ledger's schema prunes fields it does not list under
    # status.applied; whatever the API server stored is what is printed.
    if "pgbouncerPods" in stored["applied"]:
        assert ("pgbouncer pods applied: 1 of 2 ready; lagging: shop-pgbouncer-6f7d-xyz12"
                in lines)  # fmt: skip

    as_json = poolwarden("status", "--kubeconfig", kubeconfig, "-n", cluster.ns, "-o", "json")
    assert as_json.returncode == 0, as_json
    (ledger,) = json.loads(as_json.stdout)
    assert ledger["name"] == "budget" and ledger["inUse"]["serverActive"] == 12
    assert [c["planFile"]["poolSize"] for c in ledger["consumers"]] == [17, 22]

    missing = poolwarden("status", "--kubeconfig", kubeconfig, "-n", cluster.ns, "nope")
    assert missing.returncode == 1, missing
    assert f"no ConnectionBudget nope in namespace {cluster.ns}" in missing.stderr, missing


def test_status_without_rbac_says_what_to_grant(cluster, control_plane):  # noqa: F811
    cluster.make_budget(consumers=CONSUMERS)
    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, cluster.ns, PLURAL, "budget", {"status": STATUS}, _content_type=MERGE
    )
    write_files(cluster)
    reader = control_plane.service_account_kubeconfig(cluster.ns, "reader")
    denied = poolwarden("status", "--kubeconfig", reader, "-n", cluster.ns, "budget")
    assert denied.returncode == 1, denied
    assert (f"not allowed to read ConnectionBudget budget in namespace {cluster.ns}"
            in denied.stderr), denied.stderr  # fmt: skip
    assert f"system:serviceaccount:{cluster.ns}:reader" in denied.stderr, denied.stderr
    assert "--verb=get,list --resource=connectionbudgets.poolwarden.io,configmaps" in denied.stderr

    # Granted what the message says (kubectl create role's rules), the same user reads it all.
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role(cluster.ns, {
        "metadata": {"name": "poolwarden-status"},
        "rules": [
            {"apiGroups": ["poolwarden.io"], "resources": ["connectionbudgets"],
             "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        ],
    })  # fmt: skip
    rbac.create_namespaced_role_binding(cluster.ns, {
        "metadata": {"name": "poolwarden-status"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "poolwarden-status"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": cluster.ns}],
    })  # fmt: skip

    def allowed():
        out = poolwarden("status", "--kubeconfig", reader, "-n", cluster.ns)
        return out if out.returncode == 0 else None

    out = wait_for("the Role to take effect", allowed, timeout=30, interval=0.5).stdout
    assert row(out, "app")[:4] == ["app", "4+1", "34", "17+0"]
    assert "ConfigMap not readable" not in out


def test_status_of_a_budget_the_operator_planned(cluster, run_operator, control_plane):  # noqa: F811
    cluster.make_deployment("pgbouncer", 2)
    cluster.make_deployment("app", 3)
    cluster.make_deployment("worker", 1)
    cluster.make_budget(consumers=[{"name": "app", "deployment": "app", "workersPerPod": 2},
                                   {"name": "worker", "deployment": "worker",
                                    "workersPerPod": 1}])  # fmt: skip
    run_operator()

    def planned():
        status = cluster.budget().get("status") or {}
        return status if status.get("planGeneration") and status.get("consumers") else None

    status = wait_for("the operator's first plan", planned)
    result = poolwarden("status", "--kubeconfig", control_plane.kubeconfig, "-n", cluster.ns)
    assert result.returncode == 0, result
    out = result.stdout
    sys.stdout.write(out)
    files = status["files"]
    for c in status["consumers"]:
        (ref,) = [r for r in files if r.endswith(f"-{c['name']}-plan")]
        assert row(out, c["name"])[:6] == [
            c["name"], f"{c['replicas']}+{c['surge']}", str(c["serverPool"]),
            f"{c['poolSize']}+{c['maxOverflow']}", "gen", str(files[ref]["generation"]),
        ]  # fmt: skip
    b = status["pgbouncer"]
    assert (f"per pod max_db_connections {b['maxDbConnections']}, max_user_connections "
            f"{b['maxUserConnections']}") in out
    sizing = next(r for r in files if r.endswith("-pgbouncer-sizing"))
    aliases = ", ".join(f"{c['name']} {c['serverPool']}"
                        for c in sorted(status["consumers"], key=lambda c: c["name"]))
    assert (f"sizing file {sizing} generation {files[sizing]['generation']}: max_db_connections "
            f"{b['maxDbConnections']}") in out
    assert f"pool_size per alias: {aliases}" in out
    assert f"budget {status['budget']} (max_connections 100 - reserved 10)" in out
