"""The operator's privileges as the chart renders them: its Role and its admission policies.

What these rules allow and refuse on a real API server is proven with the operator's own token
in tests/controlplane/test_operator_privileges.py; here, which rules each set of values renders.
"""

from __future__ import annotations

import yaml
from test_chart_render import (  # noqa: F401  (defaults is a fixture)
    APP,
    CHART,
    NAMESPACE,
    OPERATOR,
    RELEASE,
    Rendered,
    defaults,
    helm,
    render,
    render_error,
)

from poolwarden_operator import names

USERNAME = f"system:serviceaccount:{NAMESPACE}:{OPERATOR}"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def role(r: Rendered) -> dict:
    return r.get("Role", OPERATOR)


def rules_for(r: Rendered, group: str, resource: str) -> list[dict]:
    return [
        rule
        for rule in role(r)["rules"]
        if group in rule["apiGroups"] and resource in rule["resources"]
    ]


def verbs(rules: list[dict]) -> set[str]:
    return {v for rule in rules for v in rule["verbs"]}


def policies(r: Rendered) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in r.of_kind("ValidatingAdmissionPolicy")}


def policy(r: Rendered, what: str) -> dict:
    return r.get("ValidatingAdmissionPolicy", f"{NAMESPACE}.{OPERATOR}-{what}")


# --- the Role -------------------------------------------------------------------------------------


def test_live_consumers_give_the_operator_no_deployment_patch(defaults):  # noqa: F811
    deployments = rules_for(defaults, "apps", "deployments")
    assert verbs(deployments) == {"get", "list", "watch"}
    assert all("resourceNames" not in rule for rule in deployments)


def test_a_rollout_consumer_gives_patch_on_its_own_deployment_only():
    r = render(sets={"app.reloadMode": "rollout"})
    deployments = rules_for(r, "apps", "deployments")
    patch = [rule for rule in deployments if "patch" in rule["verbs"]]
    assert patch == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": [APP],
            "verbs": ["patch"],
        }
    ]
    # Reading stays namespace-wide (kopf watches every Deployment of the namespace).
    assert {"get", "list", "watch"} <= verbs([x for x in deployments if x not in patch])


def test_pods_may_be_listed_watched_and_patched_nothing_else(defaults):  # noqa: F811
    assert verbs(rules_for(defaults, "", "pods")) == {"list", "watch", "patch"}
    resources = {res for rule in role(defaults)["rules"] for res in rule["resources"]}
    assert not {res for res in resources if res.startswith("pods/")}, resources


def test_the_operator_reads_no_secret_and_has_no_wildcard():
    for sets in ({}, {"app.reloadMode": "rollout"}):
        r = render(sets=sets)
        for rule in role(r)["rules"]:
            assert "secrets" not in rule["resources"], rule
            assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"], rule
        assert r.of_kind("ClusterRole") == [] and r.of_kind("ClusterRoleBinding") == []


# --- the admission policies ---------------------------------------------------------------------


def test_policies_bind_the_operator_in_its_namespace_only(defaults):  # noqa: F811
    found = policies(defaults)
    assert sorted(found) == [f"{NAMESPACE}.{OPERATOR}-deploy", f"{NAMESPACE}.{OPERATOR}-pods"]
    bindings = {d["metadata"]["name"]: d for d in defaults.of_kind(POLICY_KINDS[1])}
    assert sorted(bindings) == sorted(found)
    for name, body in found.items():
        spec = body["spec"]
        assert spec["failurePolicy"] == "Fail"
        assert spec["matchConditions"] == [
            {"name": "the-operator", "expression": f"request.userInfo.username == '{USERNAME}'"}
        ]
        rules = spec["matchConstraints"]["resourceRules"]
        assert [r["operations"] for r in rules] == [["UPDATE"]]
        binding = bindings[name]["spec"]
        assert binding["policyName"] == name
        assert binding["validationActions"] == ["Deny"]
        assert binding["matchResources"] == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
        }
        assert all(v["reason"] in ("Forbidden", "Invalid") and v["message"] for v in
                   spec["validations"])  # fmt: skip
    pods = policy(defaults, "pods")["spec"]["matchConstraints"]["resourceRules"]
    assert pods == [
        {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["UPDATE"]}
    ]
    deps = policy(defaults, "deploy")["spec"]["matchConstraints"]["resourceRules"]
    assert [(d["apiGroups"], d["resources"]) for d in deps] == [(["apps"], ["deployments"])]


def test_policies_allow_the_annotations_the_operator_writes(defaults):  # noqa: F811
    def variables(what: str) -> dict[str, str]:
        spec = policy(defaults, what)["spec"]
        return {v["name"]: v["expression"] for v in spec["variables"]}

    assert variables("pods")["key"] == f"'{names.PLAN_GENERATION_ANNOTATION}'"
    assert variables("deploy")["keys"] == (
        f"['{names.POOL_SIZE_ANNOTATION}', '{names.MAX_OVERFLOW_ANNOTATION}']"
    )
    for what in ("pods", "deploy"):
        for v in policy(defaults, what)["spec"]["validations"]:
            assert v["message"].startswith(("the operator may change only", "the poolwarden.io/"))


def test_a_named_existing_serviceaccount_is_the_one_matched():
    r = render(sets={"operator.serviceAccount.create": "false",
                     "operator.serviceAccount.name": "ops-bot"})  # fmt: skip
    for body in policies(r).values():
        expression = body["spec"]["matchConditions"][0]["expression"]
        user = f"system:serviceaccount:{NAMESPACE}:ops-bot"
        assert expression == f"request.userInfo.username == '{user}'"


def test_two_releases_never_share_a_cluster_scoped_name():
    def cluster_scoped(release: str, namespace: str) -> set[str]:
        out = helm("template", release, str(CHART), "--namespace", namespace).stdout
        r = Rendered([d for d in yaml.safe_load_all(out) if d])
        return {d["metadata"]["name"] for kind in POLICY_KINDS for d in r.of_kind(kind)}

    seen: dict[str, tuple[str, str]] = {}
    # "a-b"/"c" vs "a"/"b-c" would collide if the two parts were joined by a dash.
    for release, namespace in [(RELEASE, NAMESPACE), (RELEASE, "other"), ("other", NAMESPACE),
                               ("c", "a-b"), ("b-c", "a")]:  # fmt: skip
        found = cluster_scoped(release, namespace)
        assert len(found) == 2, found  # a policy and its binding share a name
        for name in found:
            assert name not in seen, (name, seen[name], (release, namespace))
            seen[name] = (release, namespace)
            assert len(name) <= 253, name


def test_policies_opt_out_and_go_with_the_operator():
    off = render(sets={"operator.admissionPolicy.enabled": "false"})
    assert all(off.of_kind(kind) == [] for kind in POLICY_KINDS)
    assert role(off)  # RBAC stays
    no_operator = render(sets={"operator.enabled": "false"})
    assert all(no_operator.of_kind(kind) == [] for kind in POLICY_KINDS)
    assert no_operator.of_kind("Role") == []


def test_schema_rejects_a_misspelt_or_non_boolean_opt_out():
    said = render_error(sets={"operator.admissionPolicy.enable": "false"})
    assert "admissionPolicy" in said and "enable" in said
    said = render_error(sets={"operator.admissionPolicy.enabled": "maybe"})
    assert "admissionPolicy" in said and "enabled" in said
