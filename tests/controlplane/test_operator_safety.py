"""The budget holds when things go wrong: PgBouncer pods that terminate, budgets that cannot be
planned, API failures, a broken budget among healthy ones, two budgets for one database.

One namespace and one operator (its own ServiceAccount and the chart's Role) for the whole file;
each test uses its own Deployments and budget. There is no kubelet: pods stay Pending, and a
pod carrying a finalizer stays terminating after it is deleted until the finalizer goes, which
is how these tests hold PgBouncer pods in the state where they may still have server
connections.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import kubernetes
import pytest
from kubernetes.client.rest import ApiException
from test_operator import (  # noqa: F401 - fixtures shared with the operator tests
    GROUP,
    MERGE,
    PLURAL,
    VERSION,
    Cluster,
    Operator,
    admin,
    crd,
    operator_rules,
    render_rbac,
    wait_for,
)

from poolwarden import pgbouncer_ini

HOLD = "poolwarden.test/hold"
BUDGET = 90  # maxConnections 100 - reserved 10


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared(admin, crd, render_rbac, control_plane, tmp_path_factory):  # noqa: F811
    """One namespace with the operator's Role and admission policies and one operator; pods'
    finalizers cleared after."""
    namespace = f"pw-safety-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": namespace}})
    cluster = Cluster(admin, namespace)
    with operator_rules(cluster, render_rbac({})) as account:
        kubeconfig = control_plane.service_account_kubeconfig(namespace, account)
        log = tmp_path_factory.mktemp("safety") / "operator.log"
        state = {"op": Operator(kubeconfig, namespace, log, drift=600).start()}

        def restart(drift: float) -> None:
            state["op"].stop()
            state["op"] = Operator(kubeconfig, namespace, log, drift=drift).start()

        cluster.restart_operator = restart
        yield cluster
        state["op"].stop()
        for pod in cluster.pods(""):
            if pod["metadata"].get("finalizers"):
                release(cluster, pod["metadata"]["name"])
    core.delete_namespace(namespace)
    text = log.read_text() if log.exists() else ""
    sys.stderr.write(f"--- operator log (tail) ---\n{text[-6000:]}\n")


# --------------------------------------------------------------------------- helpers


def held_deployment(cluster, name, replicas, max_surge=1):
    """A Deployment whose pods carry a finalizer: deleted pods stay terminating until released."""
    rolling = {"maxSurge": max_surge, "maxUnavailable": 0}
    strategy = {"type": "RollingUpdate", "rollingUpdate": rolling}
    cluster.make_deployment(name, replicas, strategy=strategy, finalizers=[HOLD])


def release(cluster, pod):
    try:
        cluster.core.patch_namespaced_pod(
            pod, cluster.ns, {"metadata": {"finalizers": None}}, _content_type=MERGE
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def budget_spec(pgbouncer, consumer, max_connections=100, reserved=10, database=None, **extra):
    spec = {
        "database": {
            "maxConnections": max_connections, "reserved": reserved,
            "host": "pg", "name": "shop", **(database or {}),
        },  # fmt: skip
        "pgbouncer": {"deployment": pgbouncer, **extra},
        "consumers": [{"name": "app", "deployment": consumer, "workersPerPod": 2}],
    }
    return spec


def create_budget(cluster, name, spec):
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ConnectionBudget",
        "metadata": {"name": name},
        "spec": spec,
    }
    return cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL, body)


def sizing(cluster, budget):
    text, _ = cluster.configmap_text(f"{budget}-pgbouncer-sizing", pgbouncer_ini.FILE_NAME)
    return pgbouncer_ini.parse(text) if text else None


def limit(cluster, budget):
    found = sizing(cluster, budget)
    return found.max_db_connections if found else None


def pods_of(cluster, deployment):
    pods = cluster.pods(f"app={deployment}")
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return live, [p for p in pods if p["metadata"].get("deletionTimestamp")]


def wait_limit(cluster, budget, want, what, timeout=30):
    return wait_for(what, lambda: limit(cluster, budget) == want, timeout=timeout)


def sample_within_budget(cluster, budget, deployment, seconds):
    """Sample for ``seconds``: existing pods x the sizing file's limit stays within the budget."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = sum(len(x) for x in pods_of(cluster, deployment))
        value = limit(cluster, budget)
        after = sum(len(x) for x in pods_of(cluster, deployment))
        pods = max(before, after)
        seen.append((pods, value))
        assert pods * value <= BUDGET, f"{pods} PgBouncer pods x {value} > {BUDGET}: {seen}"
        time.sleep(0.05)
    return seen


# --------------------------------------------------------------------------- tests


def test_scale_up_and_down_count_every_pod_that_may_hold_connections(shared):
    cluster = shared
    held_deployment(cluster, "pgb-scale", 2)
    cluster.make_deployment("app-scale", 1)
    create_budget(cluster, "scale", budget_spec("pgb-scale", "app-scale"))
    wait_limit(cluster, "scale", 30, "sizing for 2 PgBouncers + 1 surge")

    # 2 -> 5, more than the surge: planned for 5 + 1 surge.
    cluster.scale("pgb-scale", 5)
    wait_limit(cluster, "scale", BUDGET // 6, "sizing for 5 PgBouncers + 1 surge")
    wait_for("5 PgBouncer pods", lambda: len(pods_of(cluster, "pgb-scale")[0]) == 5)
    assert 5 * limit(cluster, "scale") <= BUDGET
    status = wait_for(
        "status of the plan for 5 + 1",
        lambda: (s := cluster.budget("scale")["status"])["pgbouncer"]["maxDbConnections"]
        == BUDGET // 6 and s,
    )  # fmt: skip
    assert status["state"] == "Ready" and status["pgbouncer"]["pods"] == 6

    # 5 -> 4, then 4 -> 2 with the pods that leave held terminating.
    cluster.scale("pgb-scale", 4)
    wait_for("one terminating pod", lambda: len(pods_of(cluster, "pgb-scale")[1]) == 1)
    for pod in pods_of(cluster, "pgb-scale")[1]:
        release(cluster, pod["metadata"]["name"])
    wait_limit(cluster, "scale", BUDGET // 5, "sizing for 4 PgBouncers + 1 surge")
    wait_for("4 pods, none terminating", lambda: [len(x) for x in pods_of(cluster, "pgb-scale")]
             == [4, 0])  # fmt: skip

    cluster.scale("pgb-scale", 2)
    wait_for("two terminating pods", lambda: len(pods_of(cluster, "pgb-scale")[1]) == 2)
    sample_within_budget(cluster, "scale", "pgb-scale", 1.0)  # passes begun before may finish
    # max(2 live, 2 + 1 surge) + 2 terminating = 5 pods may hold server connections.
    wait_limit(cluster, "scale", BUDGET // 5, "sizing counting the terminating pods")
    seen = sample_within_budget(cluster, "scale", "pgb-scale", 2.0)
    assert {value for _, value in seen} == {BUDGET // 5}, "raised while pods still terminate"
    status = wait_for(
        "status counting 5 pods that may hold server connections",
        lambda: (s := cluster.budget("scale")["status"])["pgbouncer"].get("pods") == 5 and s,
    )
    assert status["pgbouncer"]["maxDbConnections"] == BUDGET // 5
    assert status["serverTotal"] == 5 * (BUDGET // 5) <= BUDGET

    first, second = (p["metadata"]["name"] for p in pods_of(cluster, "pgb-scale")[1])
    release(cluster, first)
    wait_limit(cluster, "scale", BUDGET // 4, "sizing once one terminating pod is gone")
    assert len(pods_of(cluster, "pgb-scale")[1]) == 1 and 4 * (BUDGET // 4) <= BUDGET
    release(cluster, second)
    wait_limit(cluster, "scale", BUDGET // 3, "sizing once every terminating pod is gone")
    wait_for(
        "status of the plan for 2 + 1",
        lambda: cluster.budget("scale")["status"]["pgbouncer"]["maxDbConnections"] == BUDGET // 3,
    )


def test_an_invalid_budget_lowers_pgbouncer_and_says_what_to_change(shared):
    cluster = shared
    cluster.make_deployment("pgb-invalid", 2, strategy={"type": "Recreate"})
    cluster.make_deployment("app-invalid", 1)
    create_budget(cluster, "invalid", budget_spec("pgb-invalid", "app-invalid"))
    wait_limit(cluster, "invalid", 45, "sizing for 2 PgBouncers")
    # maxConnections lowered below what 2 PgBouncer pods need: 1 budgeted connection for 2 pods.
    cluster.patch_budget("invalid", {"database": {"maxConnections": 3, "reserved": 2}})
    wait_limit(cluster, "invalid", 1, "the fail-safe sizing (never the old 45)")
    # The app keeps the database alias it connects to, inside the safe limit.
    assert [(d.name, d.pool_size) for d in sizing(cluster, "invalid").databases] == [("app", 1)]
    status = wait_for(
        "the Invalid state",
        lambda: (s := cluster.budget("invalid")["status"]).get("state") == "Invalid" and s,
    )
    assert status["pgbouncer"]["maxDbConnections"] == 1
    ready = cluster.condition("Ready", "invalid")
    assert ready["status"] == "False" and ready["reason"] == "InvalidBudget"
    assert "raise maxConnections" in ready["message"]
    assert "PostgreSQL's connection limit" in ready["message"]
    warning = wait_for(
        "a Warning Event saying what to change",
        lambda: [e for e in cluster.events("InvalidBudget")
                 if e["involvedObject"]["name"] == "invalid"],
    )  # fmt: skip
    assert warning[0]["type"] == "Warning" and "raise maxConnections" in warning[0]["message"]

    # Fixed: planned again.
    cluster.patch_budget("invalid", {"database": {"maxConnections": 100, "reserved": 10}})
    wait_limit(cluster, "invalid", 45, "the plan once the budget is fixed")
    wait_for("Ready again", lambda: cluster.condition("Ready", "invalid")["status"] == "True")


def test_a_failed_pass_is_repaired_without_waiting_for_the_drift_check(shared):
    cluster = shared
    cluster.make_deployment("pgb-fail", 1, strategy={"type": "Recreate"})
    cluster.make_deployment("app-fail", 2)
    # maxClientConn 100: the client side makes the scale to 6 change the app's pools.
    create_budget(cluster, "fail", budget_spec("pgb-fail", "app-fail", maxClientConn=100))
    wait_for("the first plan", lambda: cluster.plan("fail-app-plan"))
    before = cluster.plan("fail-app-plan").pool_size

    role = cluster.rbac.read_namespaced_role(cluster.role_name, cluster.ns, _preload_content=False)
    original = json.loads(role.data)["rules"]
    broken = json.loads(json.dumps(original))
    for rule in broken:
        if rule["resources"] == ["configmaps"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    cluster.rbac.patch_namespaced_role(cluster.role_name, cluster.ns, {"rules": broken})
    try:
        cluster.scale("app-fail", 6)  # the pass for this event gets 403 writing the plan
        time.sleep(2)
        assert cluster.plan("fail-app-plan").pool_size == before
    finally:
        cluster.rbac.patch_namespaced_role(cluster.role_name, cluster.ns, {"rules": original})
    # An identical event (nothing the plan depends on changed) must not hide the failure.
    cluster.apps.patch_namespaced_deployment(
        "app-fail", cluster.ns, {"metadata": {"annotations": {"touched": "1"}}},
        _content_type=MERGE,
    )  # fmt: skip
    plan = wait_for(
        "the plan for 6 replicas after the API failure (drift check is 600 s away)",
        lambda: (p := cluster.plan("fail-app-plan")) and p.pool_size < before and p,
        timeout=45,
    )
    status = wait_for(
        "status of the repaired plan",
        lambda: (
            (s := cluster.budget("fail")["status"]).get("planGeneration") == plan.generation and s
        ),
    )
    assert status["consumers"][0]["replicas"] == 6


def test_two_budgets_for_one_database_are_reported_on_both(shared):
    cluster = shared
    database = {"host": "pg", "port": 5432, "name": "shop", "role": "app"}
    for name in ("one", "two"):
        cluster.make_deployment(f"pgb-{name}", 1, strategy={"type": "Recreate"})
        cluster.make_deployment(f"app-{name}", 1)
    create_budget(cluster, "one", budget_spec("pgb-one", "app-one", database=database))
    wait_for("budget one planned", lambda: cluster.condition("Ready", "one"))
    assert cluster.condition("Overlapping", "one")["status"] == "False"
    # The same server written another way.
    other = {**database, "host": f"PG.{cluster.ns}.svc.cluster.local"}
    create_budget(cluster, "two", budget_spec("pgb-two", "app-two", database=other))
    for name, peer in (("one", "two"), ("two", "one")):
        condition = wait_for(
            f"Overlapping on {name}",
            lambda n=name: (c := cluster.condition("Overlapping", n)) and c["status"] == "True"
            and c,
        )  # fmt: skip
        assert f"ConnectionBudget(s) {peer} " in condition["message"]
    wait_for(
        "a Warning Event on each",
        lambda: (
            {e["involvedObject"]["name"] for e in cluster.events("Overlapping")} >= {"one", "two"}
        ),
    )
    cluster.patch_budget("two", {"database": {"role": "reporting"}})
    for name in ("one", "two"):
        wait_for(
            f"Overlapping to clear on {name}",
            lambda n=name: cluster.condition("Overlapping", n)["status"] == "False",
        )


def test_two_writers_of_one_configmap_are_rejected(shared):
    cluster = shared
    cases = [
        (
            [
                {"name": "a", "deployment": "x", "planConfigMap": "same"},
                {"name": "b", "deployment": "y", "planConfigMap": "same"},
            ],
            {},
            "every consumer needs its own planConfigMap",
        ),
        (
            [{"name": "a", "deployment": "x", "planConfigMap": "same"}],
            {"sizingConfigMap": "same"},
            "a consumer's planConfigMap cannot be the PgBouncer sizingConfigMap",
        ),
    ]
    for consumers, pgbouncer, message in cases:
        spec = budget_spec("pgb-clash", "x", **pgbouncer)
        spec["consumers"] = consumers
        with pytest.raises(ApiException) as info:
            create_budget(cluster, "clash", spec)
        assert info.value.status == 422, info.value.body
        assert message in json.loads(info.value.body)["message"]

    # An override equal to another consumer's default name depends on the budget's name: the
    # operator refuses to plan it, and PgBouncer still gets a safe sizing.
    cluster.make_deployment("pgb-clash", 2, strategy={"type": "Recreate"})
    spec = budget_spec("pgb-clash", "x")
    spec["consumers"] = [
        {"name": "a", "deployment": "x"},
        {"name": "b", "deployment": "y", "planConfigMap": "clash-a-plan"},
    ]
    create_budget(cluster, "clash", spec)
    ready = wait_for(
        "the ConfigMapConflict condition",
        lambda: (c := cluster.condition("Ready", "clash")) and c["status"] == "False" and c,
    )
    assert ready["reason"] == "ConfigMapConflict"
    assert "'clash-a-plan'" in ready["message"] and "planConfigMap" in ready["message"]
    wait_limit(cluster, "clash", 45, "a safe sizing despite the consumers' error")


def test_one_broken_budget_never_stops_drift_repair_of_the_others(shared):
    cluster = shared
    for name in ("a-broken", "b-healthy"):
        cluster.make_deployment(f"pgb-{name}", 1, strategy={"type": "Recreate"})
        cluster.make_deployment(f"app-{name}", 1)
    # The broken budget's sizing ConfigMap exists and is immutable: every write to it fails.
    cluster.core.create_namespaced_config_map(
        cluster.ns,
        {
            "metadata": {"name": "drift-a-broken-pgbouncer-sizing"},
            "data": {pgbouncer_ini.FILE_NAME: "max_db_connections = 999\n"},
            "immutable": True,
        },
    )
    create_budget(cluster, "drift-b-healthy", budget_spec("pgb-b-healthy", "app-b-healthy"))
    create_budget(cluster, "drift-a-broken", budget_spec("pgb-a-broken", "app-a-broken"))
    wait_limit(cluster, "drift-b-healthy", 90, "the healthy budget's sizing")
    cluster.restart_operator(drift=2)
    time.sleep(3)  # the passes of the restart itself are over: only drift repairs from here
    text, _ = cluster.configmap_text("drift-b-healthy-pgbouncer-sizing", pgbouncer_ini.FILE_NAME)
    cluster.core.patch_namespaced_config_map(
        "drift-b-healthy-pgbouncer-sizing", cluster.ns,
        {"data": {pgbouncer_ini.FILE_NAME: "max_db_connections = 999\n"}}, _content_type=MERGE,
    )  # fmt: skip
    wait_for(
        "drift to repair the healthy budget's hand-edited sizing",
        lambda: cluster.configmap_text(
            "drift-b-healthy-pgbouncer-sizing", pgbouncer_ini.FILE_NAME
        )[0] == text,
        timeout=30,
    )  # fmt: skip
    cluster.restart_operator(drift=600)


def test_pod_lists_are_read_page_by_page(shared, monkeypatch):
    import asyncio

    from poolwarden_operator import kube

    cluster = shared
    cluster.make_deployment("paged", 5)
    wait_for("5 pods", lambda: len(cluster.pods("app=paged")) == 5)
    monkeypatch.setattr(kube, "PAGE", 2)
    client = kube.Kube(cluster.api, "test")
    calls = []
    real = client.core.list_namespaced_pod

    def counting(*args, **kwargs):
        calls.append(kwargs.get("limit"))
        return real(*args, **kwargs)

    client.core.list_namespaced_pod = counting
    pods = asyncio.run(client.list_pods(cluster.ns, "app=paged"))
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(
        p["metadata"]["name"] for p in cluster.pods("app=paged")
    )
    assert calls == [2, 2, 2]  # 5 pods in pages of 2
