"""The operator against a real kube-apiserver + etcd + controller-manager.

The operator runs as a subprocess (``python -m poolwarden_operator``) with a token of its own
ServiceAccount, bound to the Role rendered by ``helm template`` from
``charts/poolwarden/templates/operator-rbac.yaml`` and under the admission policies of
``operator-admission-policy.yaml``: these tests prove the rules are sufficient (and, separately
and in test_operator_privileges.py, not more). There is no kubelet, so pods stay Pending;
annotations still land.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import polling
import pytest
import yaml
from kubernetes.client.rest import ApiException

from poolwarden import pgbouncer_ini, planfile, planner

PROJECT_DIR = Path(__file__).resolve().parents[2]
CHART = PROJECT_DIR / "charts" / "poolwarden"
CRD = CHART / "crds" / "connectionbudgets.poolwarden.io.yaml"
HELM = PROJECT_DIR / ".tools" / "bin" / "helm"
MEASUREMENTS = PROJECT_DIR / ".state" / "measurements"
GROUP, VERSION, PLURAL = "poolwarden.io", "v1alpha1", "connectionbudgets"
MERGE = "application/merge-patch+json"
DEFAULT_WAIT = 60.0
DEFAULT_CONSUMERS = [{"name": "app", "deployment": "app", "workersPerPod": 2}]
DATABASE = {"host": "pg.example", "port": 5432, "name": "shop"}
# PgBouncer's max_client_conn in the scale tests: small enough that the client side decides the
# app's pools (with sizing v2 the server side does not depend on the consumers' replicas).
CLIENTS = 100


# --------------------------------------------------------------------------- helpers


def wait_for(what, probe, timeout=DEFAULT_WAIT, interval=0.02):
    """Poll ``probe`` until truthy; a 404 (object not there yet) counts as "not yet"."""
    return polling.wait_for(what, probe, timeout=timeout, interval=interval,
                            tolerate=lambda e: isinstance(e, ApiException) and e.status == 404)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Admin-side view of one test namespace."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        self.autoscaling = kubernetes.client.AutoscalingV2Api(api)

    def make_deployment(self, name, replicas, strategy=None, labels=None, finalizers=None):
        """A Deployment of placeholder pods; pods carrying ``finalizers`` stay terminating after
        they are deleted until the finalizers are removed."""
        labels = labels or {"app": name}
        pod_meta = {"labels": labels} | ({"finalizers": finalizers} if finalizers else {})
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": pod_meta,
                    "spec": {
                        "containers": [{"name": "main", "image": "poolwarden.invalid/none:0"}]
                    },
                },
            },
        }
        if strategy:
            body["spec"]["strategy"] = strategy
        self.apps.create_namespaced_deployment(self.ns, body)

    def scale(self, name, replicas):
        """What ``kubectl scale`` does: write the scale subresource."""
        self.apps.patch_namespaced_deployment_scale(
            name, self.ns, {"spec": {"replicas": replicas}}, _content_type=MERGE
        )

    def make_budget(
        self, name="budget", max_connections=100, reserved=10, consumers=None, **pgbouncer
    ):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ConnectionBudget",
            "metadata": {"name": name},
            "spec": {
                "database": {
                    "maxConnections": max_connections, "reserved": reserved, **DATABASE
                },
                "pgbouncer": {"deployment": "pgbouncer", **pgbouncer},
                "consumers": DEFAULT_CONSUMERS if consumers is None else consumers,
            },
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def make_hpa(self, target, max_replicas, name=None):
        """An autoscaling/v2 HPA for ``target`` (no metrics server: it never scales on CPU)."""
        body = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name or target},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "minReplicas": 1,
                "maxReplicas": max_replicas,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": 75}}}],
            },
        }  # fmt: skip
        self.autoscaling.create_namespaced_horizontal_pod_autoscaler(self.ns, body)

    def patch_budget(self, name, spec):
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec}, _content_type=MERGE
        )

    def budget(self, name="budget"):
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def configmap_text(self, name, key):
        response = self.core.read_namespaced_config_map(name, self.ns, _preload_content=False)
        cm = json.loads(response.data)
        return (cm.get("data") or {}).get(key), cm["metadata"]["resourceVersion"]

    def plan(self, name="budget-app-plan"):
        text, _ = self.configmap_text(name, planfile.FILE_NAME)
        return planfile.parse(text) if text else None

    def sizing(self, name="budget-pgbouncer-sizing"):
        text, _ = self.configmap_text(name, pgbouncer_ini.FILE_NAME)
        return pgbouncer_ini.parse(text) if text else None

    def events(self, reason=None):
        response = self.core.list_namespaced_event(self.ns, _preload_content=False)
        items = json.loads(response.data)["items"]
        return [e for e in items if reason is None or e["reason"] == reason]

    def pods(self, selector):
        response = self.core.list_namespaced_pod(
            self.ns, label_selector=selector, _preload_content=False
        )
        return json.loads(response.data)["items"]

    def condition(self, kind, name="budget"):
        for c in (self.budget(name).get("status") or {}).get("conditions") or []:
            if c["type"] == kind:
                return c
        return None


def expected_pool(
    replicas, workers=2, max_connections=100, reserved=10, bouncers=1, clients=CLIENTS
):
    """The planner's answer for the default fixtures (Deployments default to maxSurge 25%)."""
    result = planner.plan(
        planner.Budget(max_connections, reserved),
        planner.PgBouncer(bouncers, planner.resolve_surge(bouncers), clients),
        [planner.Consumer("app", replicas, workers, surge=planner.resolve_surge(replicas))],
    )
    return result


class Operator:
    """The operator as a subprocess with its ServiceAccount's kubeconfig."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path, drift: float) -> None:
        self.kubeconfig, self.namespace, self.log, self.drift = kubeconfig, namespace, log, drift
        self.port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Operator:
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            POOLWARDEN_NAMESPACE=self.namespace,
            POOLWARDEN_LIVENESS_HOST="127.0.0.1",
            POOLWARDEN_LIVENESS_PORT=str(self.port),
            POOLWARDEN_METRICS_PORT=str(self.metrics_port),
            # Long by default, so that tests prove the event path and not the drift check.
            POOLWARDEN_DRIFT_INTERVAL=str(self.drift),
            PYTHONWARNINGS="default",
        )
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "poolwarden_operator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_for("the operator's liveness endpoint", self.alive, timeout=60, interval=0.2)
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            pytest.fail(f"operator exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def metrics_text(self) -> str:
        """The operator's ``/metrics`` as served (Prometheus text format)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def admin(control_plane):
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def crd(admin):
    ext = kubernetes.client.ApiextensionsV1Api(admin)
    body = yaml.safe_load(CRD.read_text())
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established():
        got = ext.read_custom_resource_definition(body["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in got.status.conditions or []
        )

    wait_for("the ConnectionBudget CRD to be established", established, interval=0.2)
    return body


OPERATOR_RULES = ("templates/operator-rbac.yaml", "templates/operator-admission-policy.yaml")


@pytest.fixture(scope="session")
def render_rbac(tmp_path_factory):
    """The operator's rules (Role, RoleBinding, admission policies) rendered by helm with the
    chart's own helpers and values (plus ``sets``), for the namespace ``NAMESPACE``."""
    if not HELM.exists():
        pytest.fail("helm is missing: run `make tools`", pytrace=False)
    chart = tmp_path_factory.mktemp("rbac-chart") / "poolwarden"
    (chart / "templates").mkdir(parents=True)
    for part in ("Chart.yaml", "values.yaml", "templates/_helpers.tpl", *OPERATOR_RULES):
        shutil.copy(CHART / part, chart / part)
    cache: dict[tuple, list[dict]] = {}

    def render(sets: dict[str, str]) -> list[dict]:
        key = tuple(sorted(sets.items()))
        if key not in cache:
            args = [str(HELM), "template", "pw", str(chart), "--namespace", "NAMESPACE"]
            for part in OPERATOR_RULES:
                args += ["--show-only", part]
            for k, v in sets.items():
                args += ["--set", f"{k}={v}"]
            rendered = subprocess.run(args, check=True, capture_output=True, text=True).stdout
            cache[key] = [d for d in yaml.safe_load_all(rendered) if d]
        return cache[key]

    return render


@pytest.fixture
def rbac_values() -> dict[str, str]:
    """Chart values the operator's rules are rendered with (a test may parametrize it)."""
    return {}


@pytest.fixture
def rbac_documents(render_rbac, rbac_values):
    return render_rbac(rbac_values)


@pytest.fixture
def cluster(admin, crd):
    namespace = f"pw-{uuid.uuid4().hex[:8]}"
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    yield Cluster(admin, namespace)
    kubernetes.client.CoreV1Api(admin).delete_namespace(namespace)


@contextlib.contextmanager
def operator_rules(cluster: Cluster, documents: list[dict]) -> Iterator[str]:
    """Apply the rendered Role + RoleBinding into the cluster's namespace and the admission
    policies bound to it; yield the bound ServiceAccount's name, remove the policies after."""
    account = None
    admission = kubernetes.client.AdmissionregistrationV1Api(cluster.api)
    policies, bindings = [], []
    for doc in documents:
        doc = json.loads(json.dumps(doc).replace("NAMESPACE", cluster.ns))
        if doc["kind"] == "Role":
            cluster.rbac.create_namespaced_role(cluster.ns, doc)
            cluster.role_name = doc["metadata"]["name"]
        elif doc["kind"] == "RoleBinding":
            cluster.rbac.create_namespaced_role_binding(cluster.ns, doc)
            account = doc["subjects"][0]["name"]
        elif doc["kind"] == "ValidatingAdmissionPolicy":
            admission.create_validating_admission_policy(doc)
            policies.append(doc["metadata"]["name"])
        elif doc["kind"] == "ValidatingAdmissionPolicyBinding":
            admission.create_validating_admission_policy_binding(doc)
            bindings.append(doc["metadata"]["name"])
        else:
            pytest.fail(f"the operator's rules render an unexpected {doc['kind']}")
    assert account, "operator-rbac.yaml must bind a ServiceAccount"
    try:
        yield account
    finally:
        for name in bindings:
            admission.delete_validating_admission_policy_binding(name)
        for name in policies:
            admission.delete_validating_admission_policy(name)


@pytest.fixture
def operator_account(cluster, control_plane, rbac_documents):
    """The operator's rules applied to the test namespace; the SA kubeconfig."""
    with operator_rules(cluster, rbac_documents) as account:
        yield control_plane.service_account_kubeconfig(cluster.ns, account)


@pytest.fixture
def run_operator(cluster, operator_account, tmp_path):
    """Factory: start (or restart) the operator; every instance is stopped at teardown."""
    started: list[Operator] = []
    log = tmp_path / "operator.log"

    def start(drift: float = 600) -> Operator:
        op = Operator(operator_account, cluster.ns, log, drift).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    text = log.read_text() if log.exists() else ""
    sys.stderr.write(f"--- operator log (tail) ---\n{text[-5000:]}\n")  # shown on failure only
    # kopf logs APIForbiddenError, the client "(403) Reason: Forbidden": both say Forbidden.
    forbidden = [line for line in text.splitlines() if "Forbidden" in line]
    assert not forbidden, "the operator hit RBAC denials:\n" + "\n".join(forbidden[:10])
    tracebacks = [line for line in text.splitlines() if "Traceback" in line]
    assert not tracebacks, f"the operator logged errors:\n{text[-5000:]}"


def record(name: str, values: dict) -> None:
    MEASUREMENTS.mkdir(parents=True, exist_ok=True)
    (MEASUREMENTS / f"{name}.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- tests


def test_scale_2_8_1_rewrites_plans_status_and_events(cluster, run_operator):
    # Each of these scales changes the plan: the app's client connections must fit CLIENTS.
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 2)
    cluster.make_budget(maxClientConn=CLIENTS)
    op = run_operator()
    assert op.alive()

    delays, annotated = [], []
    last_generation = 0
    for replicas in (2, 8, 1):
        want = expected_pool(replicas)
        started = time.monotonic()
        if replicas != 2:
            cluster.scale("app", replicas)
        plan = wait_for(
            f"plan.json for {replicas} replicas",
            lambda w=want: (p := cluster.plan()) and p.pool_size == w.consumers[0].pool_size and p,
            interval=0.01,
        )
        if replicas != 2:
            delays.append(time.monotonic() - started)
        assert plan.generation > last_generation
        last_generation = plan.generation
        assert plan.budget == f"{cluster.ns}/budget" and plan.consumer == "app"
        assert plan.max_overflow == 0 and not plan.overcommitted

        sizing = wait_for("the PgBouncer sizing include", cluster.sizing)
        assert sizing.max_db_connections == want.pgbouncer.max_db_connections
        # The database can never be over budget: PgBouncer pods x max_db_connections <= 90.
        assert (1 + 1) * sizing.max_user_connections <= 90
        # The app's alias holds its server pool whatever its replicas: PgBouncer queues.
        assert [(d.name, d.pool_size) for d in sizing.databases] == [
            ("app", want.consumers[0].server_pool)
        ]

        status = wait_for(
            "status of the new plan",
            lambda p=plan: (
                (s := cluster.budget().get("status") or {}).get("planGeneration") == p.generation
                and s
            ),
        )
        assert status["consumers"][0]["replicas"] == replicas
        assert status["consumers"][0]["poolSize"] == plan.pool_size
        assert status["consumers"][0]["serverPool"] == want.consumers[0].server_pool
        assert status["utilization"] == f"{want.utilization:.2f}"
        assert status["observedGeneration"] == cluster.budget()["metadata"]["generation"]
        assert status["state"] == "Ready"
        assert cluster.condition("Ready")["status"] == "True"
        assert cluster.condition("Overcommitted")["status"] == "False"

        wait_for(
            f"a PlanUpdated Event for generation {plan.generation}",
            lambda p=plan: [
                e
                for e in cluster.events("PlanUpdated")
                if f"generation {p.generation}:" in e["message"]
            ],
        )
        # Every running pod of the consumer is told to refresh its mounted plan now.
        wait_for(
            "the plan-generation annotation on every app pod",
            lambda p=plan, n=replicas: (pods := [x for x in cluster.pods("app=app")
                                                if not x["metadata"].get("deletionTimestamp")])
            and len(pods) == n
            and all(x["metadata"].get("annotations", {}).get("poolwarden.io/plan-generation")
                    == str(p.generation) for x in pods),
        )  # fmt: skip
        if replicas != 2:
            annotated.append(time.monotonic() - started)

    # More replicas never raise a pod's share; fewer give it back.
    shares = [expected_pool(n).consumers[0].pool_size for n in (2, 8, 1)]
    assert shares[1] < shares[0] < shares[2]
    # More samples of the scale -> ConfigMap delay (reported, never asserted against a clock).
    for replicas in (3, 5, 3, 5, 3, 5, 3, 5):
        pool = expected_pool(replicas).consumers[0].pool_size
        started = time.monotonic()
        cluster.scale("app", replicas)
        wait_for(
            f"plan.json for {replicas} replicas",
            lambda p=pool: cluster.plan().pool_size == p,
            interval=0.01,
        )
        delays.append(time.monotonic() - started)
    record(
        "operator-scale-delay",
        {
            "scale_to_configmap_seconds": delays,
            "median": statistics.median(delays),
            "max": max(delays),
            "scale_to_pods_annotated_seconds_upper_bound": annotated,
        },
    )
    sys.stderr.write(f"\nscale -> plan ConfigMap written: {[round(d, 3) for d in delays]} s\n")


def test_unchanged_plan_is_never_rewritten(cluster, run_operator):
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 3)
    cluster.make_budget(maxClientConn=CLIENTS)
    run_operator()
    wait_for("the first plan", cluster.plan)
    _, version = cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)
    # A change the plan does not depend on (the pod template) and a no-op CR edit.
    template = {"metadata": {"labels": {"app": "app", "x": "1"}}}
    cluster.apps.patch_namespaced_deployment(
        "app", cluster.ns, {"spec": {"template": template}}, _content_type=MERGE
    )
    cluster.patch_budget("budget", {"pgbouncer": {"maxClientConn": CLIENTS}})
    cluster.scale("app", 4)  # a real change afterwards shows the operator was listening
    wait_for(
        "the plan for 4 replicas",
        lambda: cluster.plan().pool_size == expected_pool(4).consumers[0].pool_size,
    )

    def generations():
        return sorted(
            {int(e["message"].split()[2].rstrip(":")) for e in cluster.events("PlanUpdated")}
        )

    wait_for("the Event of plan generation 2", lambda: 2 in generations())
    assert generations() == [1, 2], generations()
    assert cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)[1] != version
    # A scale that does not change the plan (the client side still fits) writes nothing new.
    cluster.patch_budget("budget", {"pgbouncer": {"maxClientConn": 1000}})
    wait_for("the plan for 1000 client connections", lambda: 3 in generations())
    _, version = cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)
    cluster.scale("app", 6)
    wait_for(
        "the status to show 6 replicas",
        lambda: cluster.budget()["status"]["consumers"][0]["replicas"] == 6,
    )
    assert cluster.budget()["status"]["planGeneration"] == 3
    assert cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)[1] == version
    assert generations() == [1, 2, 3], generations()


def test_overcommitted_budget_says_what_to_change(cluster, run_operator):
    # 6 pods x 2 workers need 12 client connections; PgBouncer accepts 10: the client side.
    cluster.make_deployment("pgbouncer", 1, strategy={"type": "Recreate"})
    cluster.make_deployment("app", 6, strategy={"type": "Recreate"})
    cluster.make_budget(max_connections=12, reserved=2, maxClientConn=10)
    run_operator()
    condition = wait_for(
        "the Overcommitted condition",
        lambda: (c := cluster.condition("Overcommitted")) and c["status"] == "True" and c,
    )
    assert "client side: 12 workers" in condition["message"]
    assert "raise spec.pgbouncer.maxClientConn to at least 12" in condition["message"]
    assert "server side" not in condition["message"]
    warning = wait_for("a Warning Event", lambda: cluster.events("Overcommitted"))
    assert warning[0]["type"] == "Warning"
    assert "raise spec.pgbouncer.maxClientConn" in warning[0]["message"]
    plan = cluster.plan()
    assert (plan.pool_size, plan.max_overflow, plan.overcommitted) == (1, 0, True)
    assert cluster.budget()["status"]["state"] == "Overcommitted"
    # PgBouncer still keeps the database inside its budget.
    assert cluster.sizing().max_db_connections == 10

    cluster.patch_budget("budget", {"pgbouncer": {"maxClientConn": 12}})
    wait_for(
        "Overcommitted to clear after raising maxClientConn",
        lambda: cluster.condition("Overcommitted")["status"] == "False",
    )
    assert not cluster.plan().overcommitted


def test_the_sizing_include_splits_the_pool_by_weight_into_one_alias_per_consumer(
    cluster, run_operator
):
    # One PgBouncer pod (Recreate: no surge) holds the whole budget of 40: weights 3:1 give
    # the aliases 30 and 10, which PgBouncer enforces; the sum is capped per pod as well.
    cluster.make_deployment("pgbouncer", 1, strategy={"type": "Recreate"})
    cluster.make_deployment("app", 2)
    cluster.make_deployment("worker", 1)
    consumers = [
        {"name": "app", "deployment": "app", "workersPerPod": 2, "weight": 3},
        {"name": "worker", "deployment": "worker", "weight": 1, "threadsPerWorker": 4},
    ]
    cluster.make_budget(max_connections=50, reserved=10, consumers=consumers)
    run_operator()

    def pools():
        sizing = cluster.sizing()
        return sizing and {d.name: d.pool_size for d in sizing.databases}

    wait_for("aliases split 3:1", lambda: pools() == {"app": 30, "worker": 10})
    sizing = cluster.sizing()
    assert sizing.max_user_connections == sizing.max_db_connections == 40
    assert {(d.host, d.port, d.dbname) for d in sizing.databases} == {
        (DATABASE["host"], DATABASE["port"], DATABASE["name"])
    }
    # The threaded worker's pool is its thread count at most; the async app's one busy pod
    # can use its whole server pool.
    assert cluster.plan("budget-worker-plan").pool_size == 4
    app = cluster.plan()
    assert 2 * (app.pool_size + app.max_overflow) >= 30
    status = wait_for("the status", lambda: (cluster.budget().get("status") or {}).get("consumers"))
    assert [(c["name"], c["serverPool"]) for c in status] == [("app", 30), ("worker", 10)]
    # A consumer scaled to zero keeps an alias of 1 (outside the split): the others get it all.
    cluster.scale("worker", 0)
    wait_for("the app to get the whole pool", lambda: pools() == {"app": 40, "worker": 1})


def test_size_for_max_replicas_follows_the_hpa(cluster, run_operator):
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 2)
    consumers = [{**DEFAULT_CONSUMERS[0], "sizeFor": "maxReplicas"}]
    cluster.make_budget(consumers=consumers, maxClientConn=CLIENTS)
    run_operator()

    def planned(replicas):
        want = expected_pool(replicas).consumers[0].pool_size
        return (
            (cluster.budget().get("status") or {}).get("consumers", [{}])[0].get("replicas")
            == replicas
            and cluster.plan().pool_size == want
        )

    wait_for("the plan for the live 2 replicas (no HPA yet)", lambda: planned(2))
    cluster.make_hpa("app", 10)
    wait_for("the plan for the HPA's maxReplicas 10", lambda: planned(10))
    cluster.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "app", cluster.ns, {"spec": {"maxReplicas": 20}}, _content_type=MERGE
    )
    wait_for("the plan for maxReplicas 20", lambda: planned(20))
    assert expected_pool(20).consumers[0].pool_size < expected_pool(10).consumers[0].pool_size
    cluster.autoscaling.delete_namespaced_horizontal_pod_autoscaler("app", cluster.ns)
    wait_for("the plan for the live count again", lambda: planned(2))


@pytest.mark.parametrize("rbac_values", [{"app.reloadMode": "rollout"}])
def test_rollout_reload_mode_puts_the_pool_into_the_pod_template(
    cluster, run_operator, rbac_documents
):
    # The one Deployment the Role lets the operator patch: the chart's rollout consumer.
    role = next(d for d in rbac_documents if d["kind"] == "Role")
    (patch,) = [
        r for r in role["rules"] if "deployments" in r["resources"] and "patch" in r["verbs"]
    ]
    (batch,) = patch["resourceNames"]
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 2)
    cluster.make_deployment(batch, 1, strategy={"type": "Recreate"})
    cluster.make_budget(
        consumers=[
            {"name": "app", "deployment": "app", "workersPerPod": 2, "weight": 3},
            {"name": "batch", "deployment": batch, "reloadMode": "rollout", "overflow": "half"},
        ]
    )
    run_operator()
    plan = wait_for("batch's plan", lambda: cluster.plan("budget-batch-plan"))

    def template():
        return (
            cluster.apps.read_namespaced_deployment(
                batch, cluster.ns
            ).spec.template.metadata.annotations
            or {}
        )

    annotations = wait_for(
        "the pool size in batch's pod template", lambda: template().get("poolwarden.io/pool-size")
    )
    assert annotations == str(plan.pool_size)
    assert template()["poolwarden.io/max-overflow"] == str(plan.max_overflow)
    app_plan = cluster.plan()
    # Weights: app (3) is never behind batch (1) per worker.
    assert app_plan.pool_size + app_plan.max_overflow >= plan.pool_size + plan.max_overflow
    # Live consumers' templates are never touched (that would restart every pod).
    app_template = cluster.apps.read_namespaced_deployment(
        "app", cluster.ns
    ).spec.template.metadata.annotations
    assert not (app_template or {}).get("poolwarden.io/pool-size")


def test_pgbouncer_scale_resizes_and_drift_repairs_hand_edits(cluster, run_operator):
    cluster.make_deployment("pgbouncer", 1, strategy={"type": "Recreate"})
    cluster.make_deployment("app", 2)
    cluster.make_budget()
    run_operator(drift=1)
    wait_for("sizing for one PgBouncer", lambda: cluster.sizing().max_db_connections == 90)
    cluster.scale("pgbouncer", 3)
    sizing = wait_for(
        "sizing for three PgBouncers",
        lambda: (z := cluster.sizing()).max_db_connections == 30 and z,
    )
    assert 3 * sizing.max_db_connections <= 90
    wait_for(
        "the plan-generation annotation on every PgBouncer pod",
        lambda: (pods := cluster.pods("app=pgbouncer")) and len(pods) == 3 and all(
            "poolwarden.io/plan-generation" in (p["metadata"].get("annotations") or {})
            for p in pods),
    )  # fmt: skip
    before = cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)[0]
    cluster.core.delete_namespaced_config_map("budget-app-plan", cluster.ns)
    sizing_text = cluster.configmap_text("budget-pgbouncer-sizing", pgbouncer_ini.FILE_NAME)[0]
    hand_edit = {"data": {pgbouncer_ini.FILE_NAME: "max_db_connections = 999\n"}}
    cluster.core.patch_namespaced_config_map(
        "budget-pgbouncer-sizing", cluster.ns, hand_edit, _content_type=MERGE
    )
    wait_for(
        "the drift check to recreate the plan",
        lambda: cluster.configmap_text("budget-app-plan", "plan.json")[0],
    )
    assert cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)[0] == before
    wait_for(
        "the drift check to repair the sizing",
        lambda: (
            cluster.configmap_text("budget-pgbouncer-sizing", pgbouncer_ini.FILE_NAME)[0]
            == sizing_text
        ),
    )


def test_invalid_budgets_are_rejected_by_the_api_server(cluster):
    cases = [
        (
            {"max_connections": 10, "reserved": 10},
            "database.reserved must be below database.maxConnections",
        ),
        ({"max_connections": 0}, "spec.database.maxConnections"),
        (
            {"consumers": [{"name": "a", "deployment": "x"}, {"name": "a", "deployment": "y"}]},
            "consumer names must be unique",
        ),
        (
            {"consumers": [{"name": "a", "deployment": "x"}, {"name": "b", "deployment": "x"}]},
            "each consumer needs its own Deployment",
        ),
        ({"consumers": [{"name": "a", "deployment": "x", "workersPerPod": 0}]}, "workersPerPod"),
        (
            {"consumers": [{"name": "a", "deployment": "x", "overflow": "lots"}]},
            'supported values: "none", "quarter", "half"',
        ),
        (
            {"consumers": [{"name": "a", "deployment": "x", "reloadMode": "restart"}]},
            'supported values: "live", "rollout"',
        ),
        ({"consumers": []}, "spec.consumers"),
        (
            {"consumers": [{"name": DATABASE["name"], "deployment": "x"}]},
            "a consumer cannot be named like spec.database.name",
        ),
        (
            {"consumers": [{"name": "pgbouncer", "deployment": "x"}]},
            "a consumer cannot be named pgbouncer",
        ),
        ({"consumers": [{"name": "Web", "deployment": "x"}]}, "spec.consumers[0].name"),
        (
            {"consumers": [{"name": "web_api", "deployment": "x"}]},
            "a consumer name with '_' needs planConfigMap",
        ),
        (
            {"consumers": [{"name": "a", "deployment": "x", "sizeFor": "peak"}]},
            'supported values: "replicas", "maxReplicas"',
        ),
        (
            {"consumers": [{"name": "a", "deployment": "pgbouncer"}]},
            "the PgBouncer Deployment cannot also be a consumer",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ApiException) as info:
            cluster.make_budget(**kwargs)
        assert info.value.status == 422, info.value.body
        said = json.loads(info.value.body)["message"]
        assert message in said, (kwargs, said)


def test_killed_operator_converges_after_restart(cluster, run_operator):
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 2)
    cluster.make_budget(maxClientConn=CLIENTS)
    op = run_operator()
    first = wait_for("the first plan", cluster.plan)
    cluster.scale("app", 8)
    op.kill()  # mid-change: the scale event may or may not have been handled
    cluster.scale("app", 5)
    cluster.scale("pgbouncer", 2)
    run_operator()
    want = expected_pool(5, bouncers=2)
    pool = want.consumers[0].pool_size
    plan = wait_for(
        "the plan for 5 app and 2 PgBouncer replicas",
        lambda: (p := cluster.plan()) and p.pool_size == pool and p,
    )
    assert plan.generation > first.generation
    wait_for(
        "sizing for 2 PgBouncer replicas",
        lambda: cluster.sizing().max_db_connections == want.pgbouncer.max_db_connections,
    )
    status = wait_for(
        "status of the converged plan",
        # The files are written before the status: right after the plan the status may be absent.
        lambda: (s := cluster.budget().get("status") or {}).get("planGeneration")
        == plan.generation
        and s,
    )
    assert status["consumers"][0]["replicas"] == 5 and status["pgbouncer"]["replicas"] == 2


def test_200_rapid_scale_events_end_in_the_final_plan(cluster, run_operator):
    cluster.make_deployment("pgbouncer", 1)
    cluster.make_deployment("app", 2)
    cluster.make_budget(maxClientConn=CLIENTS)
    run_operator()
    wait_for("the first plan", cluster.plan)
    first_generation = cluster.plan().generation
    rng = random.Random(20261122)
    final = 13  # a size no earlier event has: only the pass that saw the last event reports it
    sizes = [rng.randint(1, 12) for _ in range(199)] + [final]
    for replicas in sizes:
        cluster.scale("app", replicas)
    want = expected_pool(final).consumers[0].pool_size
    wait_for(
        f"the plan for the final {final} replicas",
        lambda: cluster.budget().get("status", {}).get("consumers", [{}])[0].get("replicas")
        == final
        and cluster.plan().pool_size == want,
    )

    # Quiet period: nothing stale may be written after the final plan.
    _, version = cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert cluster.plan().pool_size == want
        time.sleep(0.1)
    assert cluster.configmap_text("budget-app-plan", planfile.FILE_NAME)[1] == version
    status = cluster.budget()["status"]
    assert status["consumers"][0]["replicas"] == final
    plans = cluster.plan().generation - first_generation
    assert plans <= len(sizes)
    record("operator-rapid-scale", {"scale_events": len(sizes), "plans_written": plans})
    sys.stderr.write(f"\n{len(sizes)} scale events -> {plans} plan generations\n")


def test_rbac_is_sufficient_and_not_more(cluster, operator_account):
    api = kubernetes.config.new_client_from_config(config_file=str(operator_account))
    try:
        reviews = kubernetes.client.AuthorizationV1Api(api)

        def allowed(verb, resource, group="", namespace=cluster.ns, subresource=""):
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {
                    "verb": verb, "resource": resource, "group": group,
                    "namespace": namespace, "subresource": subresource,
                }},
            }  # fmt: skip
            return reviews.create_self_subject_access_review(body).status.allowed

        needed = [
            ("watch", "connectionbudgets", GROUP, cluster.ns, ""),
            ("patch", "connectionbudgets", GROUP, cluster.ns, "status"),
            ("watch", "deployments", "apps", cluster.ns, ""),
            ("watch", "horizontalpodautoscalers", "autoscaling", cluster.ns, ""),
            ("create", "configmaps", "", cluster.ns, ""),
            ("patch", "configmaps", "", cluster.ns, ""),
            ("patch", "pods", "", cluster.ns, ""),
            ("create", "events", "", cluster.ns, ""),
        ]
        for verb, resource, group, namespace, sub in needed:
            assert allowed(verb, resource, group, namespace, sub), (verb, resource, sub)
        refused = [
            ("get", "secrets", "", cluster.ns, ""),
            ("list", "secrets", "", cluster.ns, ""),
            ("delete", "configmaps", "", cluster.ns, ""),
            ("delete", "pods", "", cluster.ns, ""),
            ("create", "deployments", "apps", cluster.ns, ""),
            ("patch", "horizontalpodautoscalers", "autoscaling", cluster.ns, ""),
            ("delete", "connectionbudgets", GROUP, cluster.ns, ""),
            ("create", "pods", "", cluster.ns, "exec"),
            ("list", "configmaps", "", "kube-system", ""),
            ("watch", "deployments", "apps", "default", ""),
            ("create", "roles", "rbac.authorization.k8s.io", cluster.ns, ""),
        ]
        for verb, resource, group, namespace, sub in refused:
            assert not allowed(verb, resource, group, namespace, sub), (
                verb,
                resource,
                namespace,
                sub,
            )
        with pytest.raises(ApiException) as info:
            kubernetes.client.CoreV1Api(api).list_namespaced_secret(cluster.ns)
        assert info.value.status == 403
    finally:
        api.close()
