"""Deployments of other charts joining a budget by label, against a real kube-apiserver.

The operator runs with its ServiceAccount's token under the Role and admission policies that
``helm template`` renders (with ``discovery.namespaces`` set, so the opt-in rules are the ones
proven): a Deployment labelled ``poolwarden.io/budget=<budget>`` gets its plan ConfigMap and
PgBouncer alias, a bad annotation is refused with a condition and an Event naming it and the
fix, and the Deployment leaves when unlabelled; in another namespace only once the operator
watches it (and its Role there exists).
"""

from __future__ import annotations

import json
import uuid

import kubernetes
import pytest
from test_operator import (  # noqa: F401  (fixtures)
    MERGE,
    admin,
    cluster,
    crd,
    operator_account,
    render_rbac,
    run_operator,
    wait_for,
)

from poolwarden import planfile
from poolwarden_operator import names

OTHER = f"pw-other-{uuid.uuid4().hex[:8]}"
OPT_IN = {"discovery.namespaces": "{" + OTHER + "}"}


@pytest.fixture
def opt_in_documents(render_rbac):  # noqa: F811
    return render_rbac(OPT_IN)


@pytest.fixture
def rbac_documents(opt_in_documents):
    """The release namespace's Role, RoleBinding and the (cluster-scoped) policies; the Role for
    the other namespace is applied by the test that opts in."""
    return [
        d for d in opt_in_documents if d["metadata"].get("namespace", "NAMESPACE") == "NAMESPACE"
    ]


def make_labelled(cluster, name, replicas=1, namespace=None, **annotations):  # noqa: F811
    labels = {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {names.BUDGET_LABEL: "budget"},
            "annotations": {
                f"poolwarden.io/{k.replace('_', '-')}": v for k, v in annotations.items()
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "poolwarden.invalid/none:0"}]},
            },
        },
    }  # fmt: skip
    return cluster.apps.create_namespaced_deployment(namespace or cluster.ns, body)


def patch_meta(cluster, name, meta, namespace=None):  # noqa: F811
    cluster.apps.patch_namespaced_deployment(
        name, namespace or cluster.ns, {"metadata": meta}, _content_type=MERGE
    )


def pools(cluster):  # noqa: F811
    sizing = cluster.sizing()
    return sizing and {d.name: d.pool_size for d in sizing.databases}


def plan_in(cluster, namespace, name="budget-web-plan"):  # noqa: F811
    response = cluster.core.read_namespaced_config_map(name, namespace, _preload_content=False)
    cm = json.loads(response.data)
    return cm, planfile.parse(cm["data"][planfile.FILE_NAME])


def generations(cluster, namespace, selector):  # noqa: F811
    response = cluster.core.list_namespaced_pod(
        namespace, label_selector=selector, _preload_content=False
    )
    pods = json.loads(response.data)["items"]
    return {
        (p["metadata"].get("annotations") or {}).get(names.PLAN_GENERATION_ANNOTATION)
        for p in pods
    } if pods else None  # fmt: skip


def test_a_labelled_deployment_joins_gets_its_plan_and_leaves_when_unlabelled(
    cluster,  # noqa: F811
    run_operator,  # noqa: F811
):
    # One PgBouncer pod (Recreate: no surge) holds the budget of 40.
    cluster.make_deployment("pgbouncer", 1, strategy={"type": "Recreate"})
    cluster.make_deployment("app", 2)
    cluster.make_budget(max_connections=50, reserved=10)
    run_operator()
    wait_for("the app alone", lambda: pools(cluster) == {"app": 40})

    make_labelled(cluster, "web", replicas=2, workers="2", threads="4", weight="3")
    wait_for("web to join 3:1", lambda: pools(cluster) == {"app": 10, "web": 30})
    cm, plan = plan_in(cluster, cluster.ns)
    assert plan.consumer == "web" and plan.pool_size + plan.max_overflow <= 4  # its threads
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "ConnectionBudget"
    wait_for(
        "web's pods to carry the plan generation",
        lambda: generations(cluster, cluster.ns, "app=web") == {str(plan.generation)},
    )
    # the pods are nudged while the status is written (docs/operator.md, "How fast")
    status = wait_for(
        "web in the status",
        lambda: (lambda s: s if s.get("discovered") else None)(cluster.budget()["status"]),
    )
    assert status["discovered"] == [{"name": "web", "deployment": "web", "namespace": ""}]
    assert [c["name"] for c in status["consumers"]] == ["app", "web"]
    assert cluster.condition("Discovery")["status"] == "True"

    # A bad annotation refuses that Deployment, says which annotation and how to fix it.
    patch_meta(cluster, "web", {"annotations": {names.WORKERS_ANNOTATION: "many"}})
    wait_for("web refused", lambda: cluster.condition("Discovery")["status"] == "False")
    message = cluster.condition("Discovery")["message"]
    assert "annotation poolwarden.io/workers is 'many'" in message, message
    assert "kubectl annotate deployment web poolwarden.io/workers=1 --overwrite" in message
    assert cluster.condition("Discovery")["reason"] == "InvalidAnnotation"
    events = wait_for("a Warning Event", lambda: cluster.events("InvalidAnnotation"))
    assert events[0]["type"] == "Warning" and "poolwarden.io/workers" in events[0]["message"]
    wait_for("the app to get the whole pool back", lambda: pools(cluster) == {"app": 40})
    patch_meta(cluster, "web", {"annotations": {names.WORKERS_ANNOTATION: "2"}})
    wait_for("web back", lambda: pools(cluster) == {"app": 10, "web": 30})

    # Unlabelled, it leaves the budget: no alias, not in the status, the app gets it all.
    patch_meta(cluster, "web", {"labels": {names.BUDGET_LABEL: None}})
    wait_for("web to leave", lambda: pools(cluster) == {"app": 40})
    wait_for("web out of the status", lambda: cluster.budget()["status"]["discovered"] == [])


def test_another_namespace_joins_only_once_the_operator_watches_it(
    cluster,  # noqa: F811
    run_operator,  # noqa: F811
    opt_in_documents,
    monkeypatch,
):
    core = kubernetes.client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": OTHER}})
    try:
        cluster.make_deployment("pgbouncer", 1, strategy={"type": "Recreate"})
        cluster.make_deployment("app", 2)
        cluster.make_budget(max_connections=50, reserved=10)
        cluster.patch_budget("budget", {"discovery": {"namespaces": [OTHER]}})
        web = make_labelled(cluster, "web", namespace=OTHER, budget_namespace=cluster.ns)

        # Not watched (and no Role there): the budget says so, nothing is written there.
        monkeypatch.delenv("POOLWARDEN_CONSUMER_NAMESPACES", raising=False)
        first = run_operator()
        wait_for(
            "the Discovery condition to name the namespace",
            lambda: OTHER in ((cluster.condition("Discovery") or {}).get("message") or ""),
        )
        assert "does not watch it" in cluster.condition("Discovery")["message"]
        assert pools(cluster) == {"app": 40}
        there = [cm.metadata.name for cm in core.list_namespaced_config_map(OTHER).items]
        assert set(there) <= {"kube-root-ca.crt"}, there
        first.stop()

        # Opt in: the chart's Role there, the operator told to watch it.
        rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api)
        for doc in opt_in_documents:
            if doc["metadata"].get("namespace") != OTHER:
                continue
            doc = json.loads(json.dumps(doc).replace("NAMESPACE", cluster.ns))
            if doc["kind"] == "Role":
                rbac.create_namespaced_role(OTHER, doc)
            elif doc["kind"] == "RoleBinding":
                rbac.create_namespaced_role_binding(OTHER, doc)
        monkeypatch.setenv("POOLWARDEN_CONSUMER_NAMESPACES", OTHER)
        run_operator()
        wait_for(
            "web to join from the other namespace", lambda: pools(cluster) == {"app": 20, "web": 20}
        )
        cm, plan = wait_for("its plan ConfigMap there", lambda: plan_in(cluster, OTHER))
        assert plan.consumer == "web"
        (owner,) = cm["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Deployment",
            "web",
            web.metadata.uid,
        )
        wait_for(
            "its pod to carry the plan generation",
            lambda: generations(cluster, OTHER, "app=web") == {str(plan.generation)},
        )
        status = cluster.budget()["status"]
        assert status["discovered"] == [{"name": "web", "deployment": "web", "namespace": OTHER}]
        assert status["files"][f"{OTHER}/budget-web-plan"]["generation"] == plan.generation

        patch_meta(cluster, "web", {"labels": {names.BUDGET_LABEL: None}}, namespace=OTHER)
        wait_for("web to leave", lambda: pools(cluster) == {"app": 40})
    finally:
        core.delete_namespace(OTHER)
