"""Consumers beyond the reference app: the ones listed in values (`consumers`, over
`consumerDefaults`) and the RBAC, NetworkPolicy and budget fields that Deployments joining by
label (`discovery.namespaces`) need. Rendered by the real `helm`."""

from __future__ import annotations

import pytest
import yaml
from test_chart_render import (  # noqa: F401  (defaults is a fixture)
    APP,
    FULL,
    NAMESPACE,
    OPERATOR,
    PGBOUNCER,
    Rendered,
    ci,
    container,
    defaults,
    env_of,
    render,
    render_error,
)

from poolwarden_operator import names

BUDGET = FULL
FLASK = f"{FULL}-flask"  # ci/consumers-values.yaml: the Flask reference service


def with_values(tmp_path, values: dict):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def own_image(**extra):
    return {
        "name": "worker",
        "image": {"registry": "registry.example.com", "repository": "shop/worker", "tag": "1.4.2"},
        "command": ["gunicorn"],
        "args": ["-c", "gunicorn.conf.py", "shop.wsgi:app"],
        "workers": 4,
        "threadsPerWorker": 8,
        "weight": 2,
        "overflow": "half",
        "port": 8080,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
        "resources": {"requests": {"cpu": "10m"}},
        "env": [{"name": "SHOP_MODE", "value": "worker"}],
        **extra,
    }


@pytest.fixture(scope="module")
def second() -> Rendered:
    return render(ci("consumers"))


def test_a_listed_consumer_renders_a_deployment_service_pdb_and_budget_entry(second):
    deployment = second.get("Deployment", FLASK)
    service = second.get("Service", FLASK)
    second.get("PodDisruptionBudget", FLASK)
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"] != second.get("Service", APP)["spec"]["selector"]
    (budget,) = second.of_kind("ConnectionBudget")
    entry = next(c for c in budget["spec"]["consumers"] if c["name"] == "flask")
    assert entry == {
        "name": "flask", "deployment": FLASK, "workersPerPod": 2, "threadsPerWorker": 4,
        "sizeFor": "replicas", "weight": 2, "overflow": "none", "reloadMode": "live",
        "planConfigMap": names.plan_configmap_name(BUDGET, "flask"),
    }  # fmt: skip
    # The pod mounts the ConfigMap the operator writes for that entry, as a directory.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["plan"]["configMap"]["name"] == entry["planConfigMap"]
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["plan"] == {"name": "plan", "mountPath": "/etc/poolwarden/plan", "readOnly": True}
    env = env_of(pod["spec"]["containers"][0])
    assert env["POOLWARDEN_DB_NAME"]["value"] == "flask"  # its own PgBouncer alias
    assert env["POOLWARDEN_DB_HOST"]["value"] == PGBOUNCER
    assert env["POOLWARDEN_PLAN_FILE"]["value"] == "/etc/poolwarden/plan/plan.json"
    assert env["POOLWARDEN_WORKERS"]["value"] == "2"
    assert env["POOLWARDEN_THREADS"]["value"] == "4"
    app_env = env_of(container(second.get("Deployment", APP)["spec"]["template"]["spec"], "app"))
    same = ("POOLWARDEN_DB_USER", "POOLWARDEN_DB_PASSWORD", "POOLWARDEN_DB_PORT",
            "POOLWARDEN_POOL_TIMEOUT", "POOLWARDEN_STATEMENT_CACHE")  # fmt: skip
    assert {k: env[k] for k in same} == {k: app_env[k] for k in same}


def test_a_users_own_image_works_with_only_its_values(tmp_path):
    r = render(with_values(tmp_path, {"consumers": [own_image()]}))
    deployment = r.get("Deployment", f"{FULL}-worker")
    spec = deployment["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["image"] == "registry.example.com/shop/worker:1.4.2"
    assert (c["command"], c["args"]) == (["gunicorn"], ["-c", "gunicorn.conf.py", "shop.wsgi:app"])
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"] == {"httpGet": {"path": "/ready", "port": "http"}}
    assert "livenessProbe" not in c and "startupProbe" not in c
    assert c["resources"] == {"requests": {"cpu": "10m"}}
    env = env_of(c)
    assert env["SHOP_MODE"]["value"] == "worker"
    assert (env["POOLWARDEN_WORKERS"]["value"], env["POOLWARDEN_THREADS"]["value"]) == ("4", "8")
    assert r.get("Service", f"{FULL}-worker")["spec"]["ports"][0]["targetPort"] == "http"
    assert f"{FULL}-worker" not in r.names("PodDisruptionBudget")  # off unless enabled
    (budget,) = r.of_kind("ConnectionBudget")
    entry = budget["spec"]["consumers"][1]
    assert (entry["workersPerPod"], entry["threadsPerWorker"], entry["weight"]) == (4, 8, 2)
    assert entry["overflow"] == "half"
    # Hardened by default, and the read-only root filesystem gets a writable /tmp.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/etc/poolwarden/plan", "/tmp"}


def test_item_keys_win_and_objects_merge_key_by_key(tmp_path):
    item = own_image(
        replicaCount=0,
        port=None,
        podSecurityContext={"runAsUser": 1000},
        securityContext={"readOnlyRootFilesystem": False},
    )
    r = render(with_values(tmp_path, {"consumers": [item]}))
    deployment = r.get("Deployment", f"{FULL}-worker")
    assert deployment["spec"]["replicas"] == 0  # 0 is a value, not "unset"
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}
    }  # fmt: skip
    sc = spec["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert "ports" not in spec["containers"][0]
    assert f"{FULL}-worker" not in r.names("Service")  # no port, no Service


def test_consumer_defaults_apply_to_every_item(tmp_path):
    values = {
        "consumerDefaults": {"image": {"repository": "shop/base", "tag": "7"}, "workers": 3},
        "consumers": [{"name": "a"}, {"name": "b", "image": {"tag": "8"}}],
    }
    r = render(with_values(tmp_path, values))
    images = {
        n: r.get("Deployment", f"{FULL}-{n}")["spec"]["template"]["spec"]["containers"][0]["image"]
        for n in "ab"
    }
    assert images == {"a": "shop/base:7", "b": "shop/base:8"}
    (budget,) = r.of_kind("ConnectionBudget")
    assert [c["workersPerPod"] for c in budget["spec"]["consumers"][1:]] == [3, 3]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([{"name": "Worker"}], r"consumers/0/name|consumers\.0\.name|does not match"),
        ([{"name": "app"}], r"consumers/0/name|consumers\.0\.name|must not be valid"),
        ([{"name": "pgbouncer"}], r"consumers/0/name|consumers\.0\.name|must not be valid"),
        ([{"name": "a-name-longer-than-22ch"}], r"consumers/0/name|consumers\.0\.name"),
        ([{"name": "w", "workers": 0}], r"workers"),
        ([{"name": "w", "overflow": "lots"}], r"overflow"),
        ([{"name": "w", "replicas": 2}], r"replicas.*(not allowed|additional)"),
        ([{"name": "w"}], r"consumers\[0\] \(w\) needs image.repository"),
        ([own_image(), own_image()], r'consumers\[1\].name "worker" is used twice'),
        ([own_image(name="poolwarden")], r"is the database's name"),
        (
            [own_image(env=[{"name": "POOLWARDEN_DB_NAME", "value": "x"}])],
            r"consumers\[0\].env\[0\] sets POOLWARDEN_DB_NAME, which the chart sets",
        ),
        ([{"name": f"c{i}", "image": {"repository": "x"}} for i in range(10)], r"consumers"),
    ],
)
def test_bad_consumers_are_rejected_naming_the_key(tmp_path, items, expected):
    import re

    message = render_error(with_values(tmp_path, {"consumers": items}))
    assert re.search(expected, message, re.I), message


def test_a_rollout_consumer_gives_the_operator_patch_on_its_deployment_only(tmp_path):
    items = [own_image(reloadMode="rollout"), own_image(name="other")]
    r = render(with_values(tmp_path, {"consumers": items}))
    rules = [
        rule for rule in r.get("Role", OPERATOR)["rules"]
        if "deployments" in rule["resources"] and "patch" in rule["verbs"]
    ]  # fmt: skip
    assert [rule["resourceNames"] for rule in rules] == [[f"{FULL}-worker"]]


def test_pgbouncer_admits_listed_consumers_and_pods_labelled_for_the_budget(second):
    policy = second.get("NetworkPolicy", PGBOUNCER)
    peers = policy["spec"]["ingress"][0]["from"]
    pod = second.get("Deployment", FLASK)["spec"]["template"]["metadata"]["labels"]
    selectors = [p["podSelector"]["matchLabels"] for p in peers if "namespaceSelector" not in p]
    assert any(s.items() <= pod.items() for s in selectors)
    assert {names.BUDGET_LABEL: BUDGET} in selectors
    assert not any("namespaceSelector" in p for p in peers)


def test_other_namespaces_are_opt_in_and_grow_rbac_only_then(defaults, tmp_path):  # noqa: F811
    def roles(r):
        return sorted(
            (d["metadata"]["namespace"], d["metadata"]["name"]) for d in r.of_kind("Role")
        )

    assert roles(defaults) == [(NAMESPACE, OPERATOR)]
    (budget,) = defaults.of_kind("ConnectionBudget")
    assert "discovery" not in budget["spec"]
    operator_env = env_of(
        defaults.get("Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"][0]
    )
    assert "POOLWARDEN_CONSUMER_NAMESPACES" not in operator_env

    r = render(with_values(tmp_path, {"discovery": {"namespaces": ["web", "api", NAMESPACE]}}))
    extra = f"{OPERATOR}-consumers"
    assert roles(r) == [("api", extra), (NAMESPACE, OPERATOR), ("web", extra)]
    role = next(d for d in r.of_kind("Role") if d["metadata"]["namespace"] == "web")
    verbs = {(g, res): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for res in rule["resources"]}  # fmt: skip
    assert verbs[("apps", "deployments")] == {"get", "list", "watch"}  # never patched there
    assert verbs[("", "configmaps")] == {"get", "create", "patch"}
    assert verbs[("", "pods")] == {"list", "watch", "patch"}
    assert verbs[("poolwarden.io", "connectionbudgets")] == {"get", "list", "watch"}
    assert ("", "secrets") not in verbs and not any("delete" in v for v in verbs.values())
    binding = next(d for d in r.of_kind("RoleBinding") if d["metadata"]["namespace"] == "web")
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    (budget,) = r.of_kind("ConnectionBudget")
    assert budget["spec"]["discovery"] == {"namespaces": ["web", "api"]}
    env = env_of(r.get("Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"][0])
    assert env["POOLWARDEN_CONSUMER_NAMESPACES"]["value"] == "web,api"
    # The pods policy covers the pods it annotates there; Deployments stay release-only.
    bindings = {
        d["metadata"]["name"].rsplit("-", 1)[1]: d["spec"]["matchResources"]["namespaceSelector"]
        for d in r.of_kind("ValidatingAdmissionPolicyBinding")
    }
    assert bindings["pods"]["matchExpressions"][0]["values"] == [NAMESPACE, "web", "api"]
    assert bindings["deploy"] == {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    peers = r.get("NetworkPolicy", PGBOUNCER)["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "web"}},
        "podSelector": {"matchLabels": {names.BUDGET_LABEL: BUDGET}},
    } in peers


def test_every_variable_the_chart_sets_is_refused_in_env(tmp_path):
    """The chart's own variables (with threads, so POOLWARDEN_THREADS is set too) are exactly
    the ones an item's env may not override."""
    r = render(with_values(tmp_path, {"consumers": [own_image()]}))
    (c,) = r.get("Deployment", f"{FULL}-worker")["spec"]["template"]["spec"]["containers"]
    owned = [e["name"] for e in c["env"] if e["name"] != "SHOP_MODE"]
    assert len(owned) == 12 and all(n.startswith("POOLWARDEN_") for n in owned)
    for n in owned:
        item = own_image(env=[{"name": n, "value": "x"}])
        message = render_error(with_values(tmp_path, {"consumers": [item]}))
        assert f"sets {n}, which the chart sets" in message, message


def test_an_async_consumer_gets_no_threads_variable(tmp_path):
    r = render(with_values(tmp_path, {"consumers": [own_image(threadsPerWorker=0, workers=3)]}))
    pod = r.get("Deployment", f"{FULL}-worker")["spec"]["template"]
    env = env_of(pod["spec"]["containers"][0])
    assert env["POOLWARDEN_WORKERS"]["value"] == "3"
    assert "POOLWARDEN_THREADS" not in env
