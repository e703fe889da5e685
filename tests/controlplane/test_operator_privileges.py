"""The operator's least privilege, tried with its own ServiceAccount token on a real kube-apiserver.

The chart is rendered by ``helm template`` into the test namespace (its operator Role and
RoleBinding, its ValidatingAdmissionPolicies and their bindings, its ConnectionBudget) and
applied as rendered. Then requests made with the operator's token show what it can and cannot
do: every refusal is asserted by HTTP status and by the API server's message (RBAC's "cannot
patch resource" or the admission policy's own message), so a refusal for some other reason
never passes. The operator itself then runs under exactly these rules and does its work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException
from test_operator import (  # noqa: F401  (admin, crd, cluster are fixtures)
    CHART,
    HELM,
    Cluster,
    Operator,
    admin,
    cluster,
    crd,
    wait_for,
)

RELEASE = "pw"
FULL = f"{RELEASE}-poolwarden"
APP, PGBOUNCER, OPERATOR = f"{FULL}-app", f"{FULL}-pgbouncer", f"{FULL}-operator"
PLAN_ANNOTATION = "poolwarden.io/plan-generation"
POOL_SIZE, MAX_OVERFLOW = "poolwarden.io/pool-size", "poolwarden.io/max-overflow"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
POD_ONLY = f"the operator may change only the {PLAN_ANNOTATION} annotation of a pod"
TEMPLATE_ONLY = (
    f"the operator may change only the {POOL_SIZE} and {MAX_OVERFLOW} annotations"
    " of a Deployment's pod template"
)
CLUSTER_SCOPED = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


# --------------------------------------------------------------------------- the chart, applied


def render(namespace: str, sets: dict[str, str]) -> list[dict]:
    """The chart's operator RBAC, admission policies and ConnectionBudget for this namespace."""
    if not HELM.exists():
        pytest.fail("helm is missing: run `make tools`", pytrace=False)
    args = [str(HELM), "template", RELEASE, str(CHART), "--namespace", namespace]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    kinds = {"Role", "RoleBinding", "ConnectionBudget", *CLUSTER_SCOPED}
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in kinds]


class Release:
    """The rendered objects applied into one test namespace; the operator's API client."""

    def __init__(self, view: Cluster, control_plane, docs: list[dict]) -> None:
        self.cluster, self.docs = view, docs
        self.admission = kubernetes.client.AdmissionregistrationV1Api(view.api)
        self.policies: list[str] = []
        self.bindings: list[str] = []
        self.account = None
        for doc in docs:
            kind = doc["kind"]
            if kind == "Role":
                view.rbac.create_namespaced_role(view.ns, doc)
            elif kind == "RoleBinding":
                view.rbac.create_namespaced_role_binding(view.ns, doc)
                self.account = doc["subjects"][0]["name"]
            elif kind == "ValidatingAdmissionPolicy":
                self.admission.create_validating_admission_policy(doc)
                self.policies.append(doc["metadata"]["name"])
            elif kind == "ValidatingAdmissionPolicyBinding":
                self.admission.create_validating_admission_policy_binding(doc)
                self.bindings.append(doc["metadata"]["name"])
        assert self.account == OPERATOR, "the chart binds its Role to the operator's account"
        self.username = f"system:serviceaccount:{view.ns}:{OPERATOR}"
        self.kubeconfig = control_plane.service_account_kubeconfig(view.ns, OPERATOR)
        self.api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.apps = kubernetes.client.AppsV1Api(self.api)

    def budget(self) -> dict:
        return next(d for d in self.docs if d["kind"] == "ConnectionBudget")

    def policy(self, what: str) -> str:
        """The name the chart gives one of its policies (and its binding)."""
        name = f"{self.cluster.ns}.{OPERATOR}-{what}"
        assert name in self.policies and name in self.bindings, (name, self.policies)
        return name

    def close(self) -> None:
        self.api.close()
        for name in self.bindings:
            self.admission.delete_validating_admission_policy_binding(name)
        for name in self.policies:
            self.admission.delete_validating_admission_policy(name)


@pytest.fixture
def release(cluster, control_plane):  # noqa: F811
    """Factory: render and apply the chart with some values; cleaned up (cluster-scoped too)."""
    made: list[Release] = []

    def apply(**sets: str) -> Release:
        made.append(Release(cluster, control_plane, render(cluster.ns, sets)))
        return made[-1]

    yield apply
    for r in made:
        r.close()


# --------------------------------------------------------------------------- helpers


def refused(call, *args, status: int, message: str, **kwargs) -> str:
    """``call`` must fail with this HTTP status and a message containing ``message``."""
    with pytest.raises(ApiException) as info:
        call(*args, **kwargs)
    got = info.value
    said = json.loads(got.body)["message"] if got.body else got.reason
    assert got.status == status, (got.status, said)
    assert message in said, said
    return said


def rbac_denial(username: str, verb: str, resource: str, group: str, namespace: str) -> str:
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return f'User "{username}" cannot {verb} resource "{resource}" in API group "{group}" {where}'


def policy_denial(policy: str, message: str) -> str:
    return f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {message}"


def make_pod(view: Cluster, name: str = "bouncer-0") -> None:
    view.core.create_namespaced_pod(
        view.ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {"app": "pgbouncer"},
                "annotations": {"team": "db"},
            },
            "spec": {
                "containers": [{"name": "main", "image": "poolwarden.invalid/pgbouncer:1"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
        },
    )


def annotations(meta) -> dict:
    return dict(meta.annotations or {})


def wait_enforced(r: Release, policy: str, probe) -> None:
    """Policies take effect shortly after they are created: wait until ``probe`` (a dry-run
    request as the operator) is refused by ``policy``."""

    def denied() -> bool:
        try:
            probe()
        except ApiException as exc:
            if exc.status == 403 and f"'{policy}'" in exc.body:
                return True
            raise
        return False

    wait_for(f"{policy} to take effect", denied, timeout=30, interval=0.1)


def type_checked(r: Release) -> None:
    """The API server type-checks every expression against the matched kinds: no warnings."""
    for name in r.policies:

        def checked(n=name):
            got = r.admission.read_validating_admission_policy(n, _preload_content=False)
            body = json.loads(got.data)
            status = body.get("status") or {}
            return status.get("observedGeneration") == body["metadata"]["generation"] and status

        status = wait_for(f"type checking of {name}", checked, timeout=30, interval=0.2)
        warnings = (status.get("typeChecking") or {}).get("expressionWarnings") or []
        assert not warnings, (name, warnings)


@contextmanager
def running_operator(r: Release, tmp_path):
    log = tmp_path / "operator.log"
    op = Operator(r.kubeconfig, r.cluster.ns, log, drift=600).start()
    try:
        yield op
    finally:
        op.stop()
        text = log.read_text() if log.exists() else ""
        sys.stderr.write(f"--- operator log (tail) ---\n{text[-5000:]}\n")
    denied = [line for line in text.splitlines() if "Forbidden" in line or "denied" in line]
    assert not denied, "the operator was refused:\n" + "\n".join(denied[:10])
    assert "Traceback" not in text, text[-5000:]


# --------------------------------------------------------------------------- pods


def test_token_changes_only_the_plan_annotation_of_a_pod(cluster, release):  # noqa: F811
    r = release()
    policy = r.policy("pods")
    make_pod(cluster)
    pod = "bouncer-0"

    def label_dry_run():
        r.core.patch_namespaced_pod(
            pod, cluster.ns, {"metadata": {"labels": {"app": "x"}}}, dry_run="All",
            _content_type=MERGE,
        )  # fmt: skip

    wait_enforced(r, policy, label_dry_run)
    type_checked(r)

    # What it is for: the plan generation, set and raised.
    for generation in ("7", "8"):
        r.core.patch_namespaced_pod(
            pod, cluster.ns, {"metadata": {"annotations": {PLAN_ANNOTATION: generation}}},
            _content_type=MERGE,
        )  # fmt: skip
        got = cluster.core.read_namespaced_pod(pod, cluster.ns)
        assert annotations(got.metadata)[PLAN_ANNOTATION] == generation

    before = cluster.core.read_namespaced_pod(pod, cluster.ns)
    attempts = [
        ("its image", STRATEGIC,
         {"spec": {"containers": [{"name": "main", "image": "evil.invalid/shell:1"}]}},
         "not its spec"),
        ("its labels", MERGE, {"metadata": {"labels": {"app": "app"}}}, "not its labels"),
        ("a new label", MERGE, {"metadata": {"labels": {"owner": "me"}}}, "not its labels"),
        ("its labels with the plan annotation", MERGE,
         {"metadata": {"labels": {"app": "app"}, "annotations": {PLAN_ANNOTATION: "9"}}},
         "not its labels"),
        ("another annotation", MERGE, {"metadata": {"annotations": {"team": "x"}}},
         "not its other annotations"),
        ("a new annotation", MERGE, {"metadata": {"annotations": {"evil": "1"}}},
         "not its other annotations"),
        ("an annotation removed", MERGE, {"metadata": {"annotations": {"team": None}}},
         "not its other annotations"),
        ("a finalizer", MERGE, {"metadata": {"finalizers": ["example.com/hold"]}},
         "not its owner references or finalizers"),
    ]  # fmt: skip
    for what, content_type, body, part in attempts:
        said = refused(
            r.core.patch_namespaced_pod, pod, cluster.ns, body, _content_type=content_type,
            status=403, message=policy_denial(policy, f"{POD_ONLY}, {part}"),
        )  # fmt: skip
        assert f'pods "{pod}" is forbidden' in said, (what, said)
    refused(
        r.core.patch_namespaced_pod, pod, cluster.ns,
        {"metadata": {"annotations": {PLAN_ANNOTATION: "1 evil"}}}, _content_type=MERGE,
        status=422, message=policy_denial(policy, f"the {PLAN_ANNOTATION} annotation must be"),
    )  # fmt: skip
    after = cluster.core.read_namespaced_pod(pod, cluster.ns)
    assert after.spec.containers[0].image == before.spec.containers[0].image
    assert after.metadata.labels == {"app": "pgbouncer"}
    assert annotations(after.metadata) == {"team": "db", PLAN_ANNOTATION: "8"}

    # RBAC: no other verb on pods.
    for call, args, verb in [
        (r.core.delete_namespaced_pod, (pod, cluster.ns), "delete"),
        (r.core.create_namespaced_pod, (cluster.ns, {"metadata": {"name": "x"},
         "spec": {"containers": [{"name": "m", "image": "i"}]}}), "create"),
        (r.core.patch_namespaced_pod_status, (pod, cluster.ns, {"metadata": {"labels": {}}}),
         "patch"),
    ]:  # fmt: skip
        resource = "pods/status" if call == r.core.patch_namespaced_pod_status else "pods"
        refused(call, *args, status=403, message=rbac_denial(
            r.username, verb, resource, "", cluster.ns))  # fmt: skip
    # The policy binds the operator only: an admin may still relabel the pod.
    cluster.core.patch_namespaced_pod(
        pod, cluster.ns, {"metadata": {"labels": {"app": "moved"}}}, _content_type=MERGE
    )


# --------------------------------------------------------------------------- deployments


def template_patches() -> list[tuple[str, dict, str]]:
    """Changes to a Deployment that no budget needs, each with the part of the message."""
    secret_volume = {
        "spec": {"template": {"spec": {
            "volumes": [{"name": "stolen", "secret": {"secretName": "pw-poolwarden-db"}}],
            "containers": [{"name": "main", "volumeMounts": [
                {"name": "stolen", "mountPath": "/stolen"}]}],
        }}}
    }  # fmt: skip
    return [
        ("its image", {"spec": {"template": {"spec": {"containers": [
            {"name": "main", "image": "evil.invalid/shell:1"}]}}}}, "not the pod spec"),
        ("its serviceAccountName", {"spec": {"template": {"spec": {
            "serviceAccountName": "pw-poolwarden-operator"}}}}, "not the pod spec"),
        ("a Secret volume", secret_volume, "not the pod spec"),
        ("the template's labels", {"spec": {"template": {"metadata": {"labels": {
            "extra": "1"}}}}}, "not its labels"),
        ("another template annotation", {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "now"}}}}}, "not its other annotations"),
        ("its replicas", {"spec": {"replicas": 9}}, "not the Deployment's replicas"),
        ("its strategy", {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 5}}}},
         "not the Deployment's replicas"),
        ("its own labels", {"metadata": {"labels": {"extra": "1"}}},
         "not the Deployment's own metadata"),
    ]  # fmt: skip


def test_without_rollout_consumers_no_deployment_is_patched(cluster, release):  # noqa: F811
    r = release()  # the chart's default: the app reloads its plan live
    cluster.make_deployment(APP, 1)
    cluster.make_deployment(PGBOUNCER, 1)
    for name in (APP, PGBOUNCER):
        bodies = [body for _, body, _ in template_patches()]
        bodies.append({"spec": {"template": {"metadata": {"annotations": {POOL_SIZE: "3"}}}}})
        for body in bodies:
            said = refused(
                r.apps.patch_namespaced_deployment, name, cluster.ns, body,
                _content_type=STRATEGIC, status=403,
                message=rbac_denial(r.username, "patch", "deployments", "apps", cluster.ns),
            )  # fmt: skip
            assert f'deployments.apps "{name}" is forbidden' in said
    # Reading them stays allowed: the planner needs replicas and strategy.
    assert r.apps.read_namespaced_deployment(APP, cluster.ns).spec.replicas == 1
    assert {d.metadata.name for d in r.apps.list_namespaced_deployment(cluster.ns).items} == {
        APP,
        PGBOUNCER,
    }


def test_rollout_consumer_template_takes_only_the_pool_size(cluster, release, tmp_path):  # noqa: F811
    r = release(**{"app.reloadMode": "rollout"})
    policy = r.policy("deploy")
    cluster.make_deployment(APP, 2, labels={"app": "app"})
    cluster.make_deployment(PGBOUNCER, 1, labels={"app": "pgbouncer"})

    def image_dry_run():
        body = template_patches()[0][1]
        r.apps.patch_namespaced_deployment(
            APP, cluster.ns, body, dry_run="All", _content_type=STRATEGIC
        )

    wait_enforced(r, policy, image_dry_run)
    type_checked(r)

    wanted = {POOL_SIZE: "1", MAX_OVERFLOW: "0"}
    r.apps.patch_namespaced_deployment(
        APP, cluster.ns, {"spec": {"template": {"metadata": {"annotations": wanted}}}},
        _content_type=MERGE,
    )  # fmt: skip
    got = cluster.apps.read_namespaced_deployment(APP, cluster.ns)
    assert annotations(got.spec.template.metadata) == wanted

    for what, body, part in template_patches():
        said = refused(
            r.apps.patch_namespaced_deployment, APP, cluster.ns, body, _content_type=STRATEGIC,
            status=403, message=policy_denial(policy, f"{TEMPLATE_ONLY}, {part}"),
        )  # fmt: skip
        assert f'deployments.apps "{APP}" is forbidden' in said, (what, said)
    refused(
        r.apps.patch_namespaced_deployment, APP, cluster.ns,
        {"spec": {"template": {"metadata": {"annotations": {POOL_SIZE: "-1"}}}}},
        _content_type=MERGE, status=422,
        message=policy_denial(policy, f"the {POOL_SIZE} and {MAX_OVERFLOW} annotations must be"),
    )  # fmt: skip
    after = cluster.apps.read_namespaced_deployment(APP, cluster.ns)
    assert after.spec.template.spec.containers[0].image == "poolwarden.invalid/none:0"
    assert after.spec.template.spec.service_account_name is None
    assert after.spec.template.spec.volumes is None
    assert after.spec.replicas == 2
    assert annotations(after.spec.template.metadata) == wanted

    # Only the rollout consumer's Deployment: PgBouncer's stays out of reach (RBAC).
    refused(
        r.apps.patch_namespaced_deployment, PGBOUNCER, cluster.ns,
        {"spec": {"template": {"metadata": {"annotations": {POOL_SIZE: "3"}}}}},
        _content_type=MERGE, status=403,
        message=rbac_denial(r.username, "patch", "deployments", "apps", cluster.ns),
    )  # fmt: skip

    # The operator itself, under these rules and the chart's own budget, does its whole job:
    # the pool size into the app's template, the plan generation onto PgBouncer's pods.
    budget = r.budget()
    budget["metadata"].pop("namespace", None)
    cluster.custom.create_namespaced_custom_object(
        "poolwarden.io", "v1alpha1", cluster.ns, "connectionbudgets", budget
    )
    with running_operator(r, tmp_path):
        plan = wait_for(
            "the app's plan",
            lambda: cluster.plan(f"{FULL}-app-plan"),
        )
        assert str(plan.pool_size) != wanted[POOL_SIZE], "the operator must change the template"
        wait_for(
            "the planned pool size in the app's pod template",
            lambda: (
                annotations(
                    cluster.apps.read_namespaced_deployment(APP, cluster.ns).spec.template.metadata
                ).get(POOL_SIZE)
                == str(plan.pool_size)
            ),
        )
        wait_for(
            "the plan generation on PgBouncer's pod",
            lambda: (
                (pods := cluster.pods("app=pgbouncer"))
                and all(PLAN_ANNOTATION in (p["metadata"].get("annotations") or {}) for p in pods)
            ),
        )


def test_operator_annotates_pods_under_the_policy(cluster, release, tmp_path):  # noqa: F811
    r = release()
    make_pod(cluster, "probe")
    wait_enforced(
        r,
        r.policy("pods"),
        lambda: r.core.patch_namespaced_pod(
            "probe", cluster.ns, {"metadata": {"labels": {"app": "x"}}}, dry_run="All",
            _content_type=MERGE,
        ),
    )  # fmt: skip
    cluster.make_deployment(APP, 2, labels={"app": "app"})
    cluster.make_deployment(PGBOUNCER, 1, labels={"app": "pgbouncer"})
    budget = r.budget()
    budget["metadata"].pop("namespace", None)
    cluster.custom.create_namespaced_custom_object(
        "poolwarden.io", "v1alpha1", cluster.ns, "connectionbudgets", budget
    )
    with running_operator(r, tmp_path):
        plan = wait_for("the app's plan", lambda: cluster.plan(f"{FULL}-app-plan"))
        wait_for(
            "the plan generation on every app pod",
            lambda: (
                (pods := cluster.pods("app=app"))
                and len(pods) == 2
                and all(
                    (p["metadata"].get("annotations") or {}).get(PLAN_ANNOTATION)
                    == str(plan.generation)
                    for p in pods
                )
            ),
        )
    template = cluster.apps.read_namespaced_deployment(APP, cluster.ns).spec.template.metadata
    assert POOL_SIZE not in annotations(template)


# --------------------------------------------------------------------------- secrets


def test_operator_token_reads_no_secret(cluster, release):  # noqa: F811
    r = release()
    cluster.core.create_namespaced_secret(
        cluster.ns, {"metadata": {"name": f"{FULL}-db"}, "stringData": {"password": "s3cret"}}
    )
    said = refused(
        r.core.read_namespaced_secret, f"{FULL}-db", cluster.ns, status=403,
        message=rbac_denial(r.username, "get", "secrets", "", cluster.ns),
    )  # fmt: skip
    assert f'secrets "{FULL}-db" is forbidden' in said
    refused(
        r.core.list_namespaced_secret, cluster.ns, status=403,
        message=rbac_denial(r.username, "list", "secrets", "", cluster.ns),
    )  # fmt: skip
    refused(
        r.core.list_namespaced_secret, cluster.ns, watch=True, timeout_seconds=2,
        _preload_content=False, status=403,
        message=rbac_denial(r.username, "watch", "secrets", "", cluster.ns),
    )  # fmt: skip
    refused(
        r.core.list_secret_for_all_namespaces, status=403,
        message=rbac_denial(r.username, "list", "secrets", "", ""),
    )  # fmt: skip
    refused(
        r.core.list_secret_for_all_namespaces, watch=True, timeout_seconds=2,
        _preload_content=False, status=403,
        message=rbac_denial(r.username, "watch", "secrets", "", ""),
    )  # fmt: skip
    # Nor through a ServiceAccount token or a pod that mounts one.
    refused(
        r.core.create_namespaced_service_account_token, OPERATOR, cluster.ns,
        {"spec": {"expirationSeconds": 600}}, status=403,
        message=rbac_denial(r.username, "create", "serviceaccounts/token", "", cluster.ns),
    )  # fmt: skip
