"""The Helm chart rendered by the real `helm` (no cluster): objects, wiring, security, schema.

Every test renders `charts/poolwarden` with `helm template` for one set of values and asserts on
the rendered objects' behaviour (what selects what, which volume is mounted where, what is
absent), not on a snapshot. `helm lint --strict` runs over every `ci/*-values.yaml`. Bad values
must be rejected by `values.schema.json` or by a `fail` in a template, with a message naming
the key to change. Validation against the Kubernetes API schemas runs in the control-plane tier
(server-side dry-run, tests/controlplane/test_chart_install.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from poolwarden_operator import config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "poolwarden"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
HELM = Path(os.environ.get("HELM", ROOT / ".tools" / "bin" / "helm"))
RELEASE = "pw"
NAMESPACE = "shop"

pytestmark = pytest.mark.skipif(
    not HELM.exists(),
    reason=f"helm not found at {HELM}: run `make tools` (or set HELM=/path/to/helm)",
)


# --- rendering --------------------------------------------------------------------------------


class Rendered:
    """The objects of one `helm template` run, looked up by kind and name."""

    def __init__(self, docs: list[dict]):
        self.docs = docs

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert found, f"no {kind} {name!r}; rendered: {self.names(kind)}"
        return found[0]

    def names(self, kind: str) -> list[str]:
        return sorted(d["metadata"]["name"] for d in self.of_kind(kind))

    def pod_specs(self) -> list[tuple[str, dict]]:
        """(object name, pod spec) of every workload and the test Pod."""
        out = []
        for d in self.docs:
            if d["kind"] in ("Deployment", "StatefulSet"):
                out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
            elif d["kind"] == "Pod":
                out.append((d["metadata"]["name"], d["spec"]))
        return out


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def template_args(
    *values_files: str | Path,
    sets: dict[str, str] | None = None,
    release=RELEASE,
    extra_args: list[str] | None = None,
):
    args = ["template", release, str(CHART), "--namespace", NAMESPACE, *(extra_args or [])]
    for f in values_files:
        args += ["-f", str(f)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def render(
    *values_files: str | Path,
    sets: dict[str, str] | None = None,
    release=RELEASE,
    extra_args: list[str] | None = None,
):
    proc = helm(*template_args(*values_files, sets=sets, release=release, extra_args=extra_args))
    return Rendered([d for d in yaml.safe_load_all(proc.stdout) if d])


def render_error(*values_files: str | Path, sets: dict[str, str] | None = None) -> str:
    proc = helm(*template_args(*values_files, sets=sets), check=False)
    assert proc.returncode != 0, "helm template accepted values it should reject"
    return proc.stderr


def ci(name: str) -> Path:
    path = CHART / "ci" / f"{name}-values.yaml"
    assert path.exists(), path
    return path


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def container(spec: dict, name: str) -> dict:
    return next(c for c in spec["containers"] if c["name"] == name)


APP = f"{RELEASE}-poolwarden-app"
PGBOUNCER = f"{RELEASE}-poolwarden-pgbouncer"
POSTGRESQL = f"{RELEASE}-poolwarden-postgresql"
OPERATOR = f"{RELEASE}-poolwarden-operator"
FULL = f"{RELEASE}-poolwarden"


@pytest.fixture(scope="module")
def defaults() -> Rendered:
    return render()


# --- lint and the values file itself ------------------------------------------------------------


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint_strict_passes(values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["-f", str(values)]
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_ci_values_file_renders_and_turns_one_feature_on():
    assert len(CI_VALUES) >= 5, [p.name for p in CI_VALUES]
    for path in CI_VALUES:
        assert render(path).of_kind("Deployment"), path.name


def test_every_leaf_value_is_documented_with_a_dash_dash_comment():
    """helm-docs convention: a `# --` comment documents its key and everything below it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        k, block = n - 1, []
        while k >= 0 and lines[k].strip().startswith("#"):
            block.append(lines[k].strip())
            k -= 1
        documented = any(c.startswith("# --") for c in block) or any(d for _, d in stack)
        nxt = next((x for x in lines[n + 1 :] if x.strip() and not x.strip().startswith("#")), "")
        is_parent = rest.strip() == "" and len(nxt) - len(nxt.lstrip()) > indent
        if is_parent:
            stack.append((indent, documented))
        elif not documented:
            undocumented.append(f"values.yaml:{n + 1}: {key}")
    assert not undocumented, "keys without a `# --` comment:\n" + "\n".join(undocumented)


def test_values_yaml_satisfies_its_own_schema_and_the_schema_is_strict():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))

    # every object we own forbids unknown keys (typos fail `helm install`)
    loose = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                if node.get("additionalProperties") is not False:
                    loose.append(path or "/")
            for key, child in node.get("properties", {}).items():
                walk(child, f"{path}/{key}")

    walk(schema, "")
    assert not loose, f"schema objects without additionalProperties: false: {loose}"


# --- bad values are rejected with a message naming the key ------------------------------------


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ({"app.workers": "0"}, r"app\.workers.*(greater than or equal to 1|minimum)"),
        ({"app.overflow": "lots"}, r"app\.overflow.*(none|must be one of)"),
        ({"app.reloadMode": "restart"}, r"app\.reloadMode"),
        ({"app.image.pullPolicy": "Sometimes"}, r"app\.image\.pullPolicy"),
        ({"app.replicas": "3"}, r"replicas.*(not allowed|Additional property)"),
        ({"pgbouncer.replicaCount": "0"}, r"pgbouncer\.replicaCount"),
        ({"postgresql.maxConnections": "5"}, r"postgresql\.maxConnections"),
        ({"budget.reserved": "1"}, r"budget\.reserved"),
        ({"app.service.type": "Ingress"}, r"app\.service\.type"),
        ({"postgresql.persistence.size": "lots"}, r"postgresql\.persistence\.size"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_schema_rejects_nonsense_naming_the_key(sets, expected):
    err = render_error(sets=sets)
    assert "values don't meet the specifications of the schema" in err, err
    assert re.search(expected, err), err


def test_reserved_at_or_above_max_connections_fails_with_what_to_change():
    err = render_error(sets={"budget.reserved": "100", "postgresql.maxConnections": "100"})
    assert "budget.reserved (100) must be below the database's max_connections (100)" in err, err


def test_max_connections_cannot_sneak_in_through_extra_settings():
    err = render_error(sets={"postgresql.extraSettings.max_connections": "500"})
    expected = "postgresql.extraSettings.max_connections is set by the chart: use "
    assert expected + "postgresql.maxConnections" in err, err
    r = render(sets={"postgresql.extraSettings.work_mem": "16MB"})
    pg = container(r.get("StatefulSet", POSTGRESQL)["spec"]["template"]["spec"], "postgresql")
    assert pg["args"][-2:] == ["-c", "work_mem=16MB"]


def test_hpa_min_above_max_fails_naming_both_keys():
    err = render_error(
        sets={
            "app.autoscaling.enabled": "true",
            "app.autoscaling.minReplicas": "5",
            "app.autoscaling.maxReplicas": "3",
        }
    )
    assert "app.autoscaling.minReplicas (5) must not exceed app.autoscaling.maxReplicas (3)" in err


def test_external_database_without_host_or_password_fails_naming_the_key():
    err = render_error(sets={"postgresql.enabled": "false", "externalDatabase.password": "x"})
    assert "externalDatabase.host is required" in err, err
    err = render_error(sets={"postgresql.enabled": "false", "externalDatabase.host": "db.example"})
    assert "externalDatabase.password (or externalDatabase.existingSecret) is required" in err, err


# --- the default install --------------------------------------------------------------------


def test_defaults_render_the_whole_system(defaults):
    assert defaults.names("Deployment") == sorted([APP, PGBOUNCER, OPERATOR])
    assert defaults.names("StatefulSet") == [POSTGRESQL]
    assert set(defaults.names("Service")) == {APP, PGBOUNCER, POSTGRESQL, f"{POSTGRESQL}-hl"}
    assert defaults.names("PodDisruptionBudget") == sorted([APP, PGBOUNCER])
    assert defaults.names("NetworkPolicy") == sorted([APP, PGBOUNCER, POSTGRESQL, OPERATOR])
    assert defaults.names("ServiceAccount") == [OPERATOR]
    assert defaults.names("ConnectionBudget") == [FULL]
    assert defaults.names("HorizontalPodAutoscaler") == []
    assert defaults.get("Deployment", PGBOUNCER)["spec"]["replicas"] == 2
    assert defaults.get("Deployment", APP)["spec"]["replicas"] == 2
    for obj in defaults.docs:
        if obj["kind"] not in (
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


def test_the_chart_templates_no_operator_configmap_so_upgrades_never_overwrite_the_plan(defaults):
    # The plan and PgBouncer sizing ConfigMaps belong to the operator; and no secret may sit in
    # a ConfigMap. The ConfigMaps templated are PgBouncer's fallback sizing (numbers only) and
    # the db-role script with role.conf (names and the limit, no password).
    import base64

    budget = defaults.get("ConnectionBudget", FULL)["spec"]
    operator_owned = {
        budget["pgbouncer"]["sizingConfigMap"],
        budget["consumers"][0]["planConfigMap"],
    }
    assert defaults.names("ConfigMap") == sorted([f"{PGBOUNCER}-fallback", f"{FULL}-db-role"])
    assert not operator_owned & set(defaults.names("ConfigMap"))
    cm = defaults.get("ConfigMap", f"{PGBOUNCER}-fallback")
    assert set(cm["data"]) == {"sizing.ini"}
    # Numbers, and the app's alias (names and numbers, no password).
    alias = r"app = host=[a-z0-9.-]+ port=[0-9]+ dbname=[A-Za-z0-9_]+ pool_size=[0-9]+"
    for line in cm["data"]["sizing.ini"].splitlines():
        assert (
            line in ("", "[databases]")
            or line.startswith(";")
            or re.fullmatch(r"[a-z_]+ = [0-9]+", line)
            or re.fullmatch(alias, line)
        ), line
    secrets = [
        base64.b64decode(v).decode() for s in defaults.of_kind("Secret") for v in s["data"].values()
    ]
    assert len(secrets) >= 4
    for cm in defaults.of_kind("ConfigMap"):
        text = json.dumps(cm)
        assert not any(secret in text for secret in secrets), cm["metadata"]["name"]


def test_app_mounts_the_plan_configmap_as_an_optional_directory_never_subpath_or_env(defaults):
    spec = defaults.get("Deployment", APP)["spec"]["template"]["spec"]
    budget = defaults.get("ConnectionBudget", FULL)["spec"]
    plan_cm = budget["consumers"][0]["planConfigMap"]
    [plan_volume] = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == plan_cm]
    assert plan_volume["configMap"]["optional"] is True
    app = container(spec, "app")
    [mount] = [m for m in app["volumeMounts"] if m["name"] == plan_volume["name"]]
    assert mount["mountPath"] == "/etc/poolwarden/plan"
    assert "subPath" not in mount and "subPathExpr" not in mount
    env = env_of(app)
    assert env["POOLWARDEN_PLAN_FILE"]["value"] == "/etc/poolwarden/plan/plan.json"
    assert not any("configMapKeyRef" in e.get("valueFrom", {}) for e in env.values())
    assert not app.get("envFrom")


def test_no_pod_template_carries_a_plan_or_its_checksum(defaults):
    for name, kind in [(APP, "Deployment"), (PGBOUNCER, "Deployment"), (OPERATOR, "Deployment")]:
        meta = defaults.get(kind, name)["spec"]["template"]["metadata"]
        text = json.dumps(meta.get("annotations", {}))
        assert "plan" not in text and "sizing" not in text, (name, text)


def test_app_env_contract_points_at_pgbouncer_with_the_password_from_a_secret(defaults):
    spec = defaults.get("Deployment", APP)["spec"]["template"]["spec"]
    env = env_of(container(spec, "app"))
    assert env["POOLWARDEN_DB_HOST"]["value"] == PGBOUNCER
    assert env["POOLWARDEN_DB_PORT"]["value"] == "6432"
    budget = defaults.get("ConnectionBudget", FULL)["spec"]
    # The app connects to its own PgBouncer database: the alias named like its consumer.
    assert env["POOLWARDEN_DB_NAME"]["value"] == budget["consumers"][0]["name"] == "app"
    assert env["POOLWARDEN_DB_USER"]["value"] == "poolwarden"
    ref = env["POOLWARDEN_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{FULL}-db", "key": "password"}
    assert defaults.get("Secret", f"{FULL}-db")["data"]["password"]
    assert env["POOLWARDEN_WORKERS"]["value"] == str(budget["consumers"][0]["workersPerPod"])
    assert {p["containerPort"] for p in container(spec, "app")["ports"]} == {8000}


def test_app_probes_and_graceful_termination(defaults):
    spec = defaults.get("Deployment", APP)["spec"]["template"]["spec"]
    app = container(spec, "app")
    assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Readiness leaves out the live database check: a database outage gives 503s, not refusals.
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz?database=false"
    assert app["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert spec["terminationGracePeriodSeconds"] > 5


def test_workers_value_is_shared_by_the_pods_and_the_budget():
    r = render(sets={"app.workers": "5"})
    env = env_of(container(r.get("Deployment", APP)["spec"]["template"]["spec"], "app"))
    assert env["POOLWARDEN_WORKERS"]["value"] == "5"
    assert r.get("ConnectionBudget", FULL)["spec"]["consumers"][0]["workersPerPod"] == 5


def test_connection_budget_names_the_objects_the_chart_renders(defaults):
    cb = defaults.get("ConnectionBudget", FULL)
    assert cb["apiVersion"] == "poolwarden.io/v1alpha1"
    spec = cb["spec"]
    # host/port/name/role: what the operator compares to report two budgets for one database.
    assert spec["database"] == {
        "maxConnections": 100, "reserved": 10,
        "host": f"{FULL}-postgresql", "port": 5432, "name": "poolwarden", "role": "poolwarden",
    }  # fmt: skip
    assert spec["pgbouncer"]["deployment"] == PGBOUNCER
    assert spec["pgbouncer"]["maxClientConn"] == 1000
    [consumer] = spec["consumers"]
    assert consumer == {
        "name": "app",
        "deployment": APP,
        "workersPerPod": 2,
        "threadsPerWorker": 0,
        "sizeFor": "replicas",
        "weight": 1,
        "overflow": "quarter",
        "reloadMode": "live",
        "planConfigMap": f"{FULL}-app-plan",
    }
    pgb = defaults.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"]
    sizing = [
        v
        for v in pgb["volumes"]
        if v.get("configMap", {}).get("name") == spec["pgbouncer"]["sizingConfigMap"]
    ]
    assert [v["configMap"] for v in sizing] == [
        {"name": spec["pgbouncer"]["sizingConfigMap"], "optional": True}
    ]
    mount = next(
        m for m in container(pgb, "pgbouncer")["volumeMounts"] if m["name"] == sizing[0]["name"]
    )
    assert mount["mountPath"] == "/etc/pgbouncer/sizing" and "subPath" not in mount


# --- PgBouncer ----------------------------------------------------------------------------------


def test_pgbouncer_points_at_the_charts_postgresql_with_secrets_from_secrets(defaults):
    spec = defaults.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"]
    env = env_of(container(spec, "pgbouncer"))
    assert env["PGBOUNCER_DB_HOST"]["value"] == POSTGRESQL
    assert env["PGBOUNCER_DB_PORT"]["value"] == "5432"
    for key in ("PGBOUNCER_DB_PASSWORD", "PGBOUNCER_ADMIN_PASSWORD", "PGBOUNCER_STATS_PASSWORD"):
        assert "secretKeyRef" in env[key]["valueFrom"], key
    secret = defaults.get("Secret", f"{FULL}-pgbouncer")
    assert set(secret["data"]) == {"admin-password", "stats-password"}


@pytest.mark.parametrize(
    ("replicas", "max_connections", "reserved"),
    [(1, 100, 10), (2, 100, 10), (3, 50, 5), (7, 20, 3), (40, 20, 3)],
)
def test_pgbouncer_fallback_sizing_keeps_the_database_within_budget_during_a_rollout(
    replicas, max_connections, reserved
):
    sets = {
        "pgbouncer.replicaCount": str(replicas),
        "postgresql.maxConnections": str(max_connections),
        "budget.reserved": str(reserved),
    }
    budget = max_connections - reserved
    if budget < replicas:  # infeasible: not even one connection per pod fits; say so
        assert "pgbouncer.replicaCount" in render_error(sets=sets)
        return
    r = render(sets=sets)
    # The fallback lives in the chart's ConfigMap (mounted), not in the pod's env.
    text = r.get("ConfigMap", f"{PGBOUNCER}-fallback")["data"]["sizing.ini"]
    fallback = dict(re.findall(r"^([a-z_]+) = ([0-9]+)$", text, re.M))
    per_replica = int(fallback["max_db_connections"])
    assert per_replica >= 1
    # Every pod the rollout strategy allows (replicas + maxSurge, 0 by default) stays within it.
    strategy = r.get("Deployment", PGBOUNCER)["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 0, "maxUnavailable": 1}
    assert (replicas + strategy["maxSurge"]) * per_replica <= budget
    assert int(fallback["default_pool_size"]) <= per_replica


def test_pgbouncer_metrics_sidecar_is_on_by_default_optional_and_exposed_on_the_service():
    default = render()
    assert [
        c["name"]
        for c in default.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"]["containers"]
    ] == ["pgbouncer", "metrics"]
    off = render(sets={"pgbouncer.metrics.enabled": "false"})
    assert [
        c["name"]
        for c in off.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"]["containers"]
    ] == ["pgbouncer"]
    on = render(ci("metrics"))
    spec = on.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"]
    metrics = container(spec, "metrics")
    env = env_of(metrics)
    assert (
        "$(PGBOUNCER_STATS_PASSWORD)@127.0.0.1:6432/pgbouncer"
        in env["PGBOUNCER_EXPORTER_CONNECTION_STRING"]["value"]
    )
    assert "secretKeyRef" in env["PGBOUNCER_STATS_PASSWORD"]["valueFrom"]
    ports = {p["name"]: p["port"] for p in on.get("Service", PGBOUNCER)["spec"]["ports"]}
    assert ports == {"pgbouncer": 6432, "metrics": 9127}


# --- PostgreSQL --------------------------------------------------------------------------------


def test_postgresql_statefulset_defaults_official_image_persistence_and_scram(defaults):
    sts = defaults.get("StatefulSet", POSTGRESQL)
    spec = sts["spec"]["template"]["spec"]
    pg = container(spec, "postgresql")
    assert pg["image"] == "postgres:17"
    assert sts["spec"]["serviceName"] == f"{POSTGRESQL}-hl"
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "data" not in {v["name"] for v in spec["volumes"]}
    assert pg["args"][0] == "postgres"  # portable across the official image and the stand-in
    assert "max_connections=100" in pg["args"]
    assert "password_encryption=scram-sha-256" in pg["args"]
    env = env_of(pg)
    assert env["POSTGRES_HOST_AUTH_METHOD"]["value"] == "scram-sha-256"
    # the image's superuser is `postgres` with its own password; the app's role is not it
    assert env["POSTGRES_USER"]["value"] == "postgres"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULL}-db",
        "key": "postgres-password",
    }
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")


def test_persistence_off_uses_an_emptydir():
    r = render(ci("no-persistence"))
    sts = r.get("StatefulSet", POSTGRESQL)
    assert "volumeClaimTemplates" not in sts["spec"]
    data = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "emptyDir": {}}


def test_postgresql_image_is_overridable_for_the_offline_stand_in():
    # `--set ...tag=17` arrives as an integer: accepted and rendered as the tag "17"
    r = render(
        sets={"postgresql.image.repository": "poolwarden/postgres", "postgresql.image.tag": "17"}
    )
    pg = container(r.get("StatefulSet", POSTGRESQL)["spec"]["template"]["spec"], "postgresql")
    assert pg["image"] == "poolwarden/postgres:17"


def test_external_database_renders_no_statefulset_and_points_pgbouncer_at_it():
    r = render(ci("external-db"))
    assert r.of_kind("StatefulSet") == []
    assert POSTGRESQL not in r.names("Service")
    assert POSTGRESQL not in r.names("NetworkPolicy")
    values = yaml.safe_load(ci("external-db").read_text())["externalDatabase"]
    env = env_of(container(r.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"], "pgbouncer"))
    assert env["PGBOUNCER_DB_HOST"]["value"] == values["host"]
    assert env["PGBOUNCER_DB_PORT"]["value"] == str(values["port"])
    assert env["PGBOUNCER_DB_NAME"]["value"] == values["database"]
    # the budget is the external database's max_connections
    assert (
        r.get("ConnectionBudget", FULL)["spec"]["database"]["maxConnections"]
        == values["maxConnections"]
    )
    # PgBouncer may reach the external database's CIDRs on its port, and nothing else but DNS
    egress = r.get("NetworkPolicy", PGBOUNCER)["spec"]["egress"]
    db_rule = egress[0]
    assert [p["port"] for p in db_rule["ports"]] == [values["port"]]
    assert [t["ipBlock"]["cidr"] for t in db_rule["to"]] == values["cidrs"]


def test_external_database_existing_secret_is_referenced_not_created():
    r = render(
        sets={
            "postgresql.enabled": "false",
            "externalDatabase.host": "db.example.internal",
            "externalDatabase.existingSecret": "managed-db",
            "externalDatabase.existingSecretPasswordKey": "pw",
        }
    )
    assert f"{FULL}-db" not in r.names("Secret")
    for name in (APP, PGBOUNCER):
        spec = r.get("Deployment", name)["spec"]["template"]["spec"]
        refs = [
            e["valueFrom"]["secretKeyRef"]
            for c in spec["containers"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {}) and e["name"].endswith("DB_PASSWORD")
        ]
        assert refs == [{"name": "managed-db", "key": "pw"}], name


# --- autoscaling --------------------------------------------------------------------------------


def test_hpa_on_targets_the_app_and_the_deployment_has_no_replica_count():
    r = render(ci("hpa"))
    dep = r.get("Deployment", APP)
    assert "replicas" not in dep["spec"]
    [hpa] = r.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": APP,
    }
    values = yaml.safe_load(ci("hpa").read_text())["app"]["autoscaling"]
    assert hpa["spec"]["minReplicas"] == values["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == values["maxReplicas"]
    # PgBouncer and the operator keep their fixed replica counts
    assert r.get("Deployment", PGBOUNCER)["spec"]["replicas"] == 2
    assert r.get("Deployment", OPERATOR)["spec"]["replicas"] == 1


# --- operator ----------------------------------------------------------------------------------


def test_operator_runs_once_with_recreate_as_its_own_serviceaccount(defaults):
    dep = defaults.get("Deployment", OPERATOR)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == OPERATOR
    assert defaults.get("ServiceAccount", OPERATOR)
    # only the operator gets an API token
    for name, pod in defaults.pod_specs():
        if name != OPERATOR:
            assert pod.get("automountServiceAccountToken") is False, name


def test_operator_rbac_binds_the_charts_serviceaccount(defaults):
    bindings = defaults.of_kind("RoleBinding") + defaults.of_kind("ClusterRoleBinding")
    assert bindings, "operator-rbac.yaml renders no binding"
    for b in bindings:
        assert {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE} in [
            {k: s.get(k) for k in ("kind", "name", "namespace")} for s in b["subjects"]
        ], b["metadata"]["name"]


def test_operator_disabled_renders_no_operator_objects():
    r = render(sets={"operator.enabled": "false"})
    assert OPERATOR not in r.names("Deployment")
    assert r.of_kind("ServiceAccount") == []
    assert OPERATOR not in r.names("NetworkPolicy")


def test_operator_metrics_port_is_one_value_for_env_port_and_annotations(defaults):
    values = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["metrics"]
    assert values["port"] == config.DEFAULT_METRICS_PORT  # the chart and the operator agree
    moved = render(sets={"operator.metrics.port": "9400"})
    for r, port in ((defaults, values["port"]), (moved, 9400)):
        pod = r.get("Deployment", OPERATOR)["spec"]["template"]
        main = container(pod["spec"], "operator")
        assert env_of(main)["POOLWARDEN_METRICS_PORT"]["value"] == str(port)
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in main["ports"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_operator_metrics_off_serves_nothing_and_accepts_nothing():
    r = render(sets={"operator.metrics.enabled": "false"})
    pod = r.get("Deployment", OPERATOR)["spec"]["template"]
    main = container(pod["spec"], "operator")
    assert env_of(main)["POOLWARDEN_METRICS_PORT"]["value"] == "0"
    assert [p["name"] for p in main["ports"]] == ["health"]
    assert "prometheus.io/scrape" not in (pod["metadata"].get("annotations") or {})
    policy = next(p for p in r.of_kind("NetworkPolicy") if p["metadata"]["name"] == OPERATOR)
    assert policy["spec"]["ingress"] == []


def test_operator_ledger_settings_reach_the_operator_as_it_reads_them(defaults):
    values = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["ledger"]
    main = container(defaults.get("Deployment", OPERATOR)["spec"]["template"]["spec"], "operator")
    env = {k: v["value"] for k, v in env_of(main).items() if k.startswith("POOLWARDEN_LEDGER")}
    got = config.Settings.from_env({"POOLWARDEN_NAMESPACE": "shop", **env})
    assert (got.ledger_interval, got.ledger_status_interval, got.ledger_window) == (
        values["intervalSeconds"], values["statusIntervalSeconds"], values["windowSeconds"])
    assert "operator.ledger.windowSeconds" in render_error(
        sets={"operator.ledger.windowSeconds": "20", "operator.ledger.intervalSeconds": "30"})
    assert "statusIntervalSeconds" in render_error(
        sets={"operator.ledger.statusIntervalSeconds": "1"})


def test_operator_metrics_port_may_not_be_the_liveness_port():
    assert "operator.metrics.port" in render_error(sets={"operator.metrics.port": "8080"})


# --- network policies -----------------------------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pod_labels(r: Rendered, kind: str, name: str) -> dict:
    return r.get(kind, name)["spec"]["template"]["metadata"]["labels"]


def test_network_policies_allow_app_to_pgbouncer_to_postgresql_only(defaults):
    app_labels = _pod_labels(defaults, "Deployment", APP)
    pgb_labels = _pod_labels(defaults, "Deployment", PGBOUNCER)
    pg_labels = _pod_labels(defaults, "StatefulSet", POSTGRESQL)
    op_labels = _pod_labels(defaults, "Deployment", OPERATOR)
    test_labels = defaults.of_kind("Pod")[0]["metadata"]["labels"]

    policies = {p["metadata"]["name"]: p["spec"] for p in defaults.of_kind("NetworkPolicy")}
    # each policy selects exactly its component's pods
    for name, labels in [
        (APP, app_labels),
        (PGBOUNCER, pgb_labels),
        (POSTGRESQL, pg_labels),
        (OPERATOR, op_labels),
    ]:
        selected = [n for n, p in policies.items() if _selects(p["podSelector"], labels)]
        assert selected == [name], (name, selected)
        assert policies[name]["policyTypes"] == ["Ingress", "Egress"]

    def peers(rules):
        return [peer for rule in rules for peer in rule.get("from", rule.get("to", []))]

    # PgBouncer accepts the app and the helm test pod, not the operator or PostgreSQL
    pgb_from = peers(policies[PGBOUNCER]["ingress"])
    assert any(_selects(p["podSelector"], app_labels) for p in pgb_from)
    assert any(_selects(p["podSelector"], test_labels) for p in pgb_from)
    assert not any(_selects(p["podSelector"], op_labels) for p in pgb_from)
    # PostgreSQL accepts PgBouncer only, and opens nothing outwards
    pg_from = peers(policies[POSTGRESQL]["ingress"])
    assert [p for p in pg_from if _selects(p["podSelector"], pgb_labels)] == pg_from
    assert not any(_selects(p["podSelector"], app_labels) for p in pg_from)
    assert policies[POSTGRESQL]["egress"] == []
    # the app may reach PgBouncer (and DNS), not PostgreSQL
    app_to = peers(policies[APP]["egress"])
    assert any(_selects(p.get("podSelector", {}), pgb_labels) for p in app_to if "podSelector" in p)
    assert not any(
        _selects(p.get("podSelector", {}), pg_labels) for p in app_to if "podSelector" in p
    )
    # the operator accepts its metrics port only and reaches the API server ports (and DNS)
    assert policies[OPERATOR]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    ports = {p["port"] for rule in policies[OPERATOR]["egress"] for p in rule["ports"]}
    assert ports == {443, 6443, 53, "http", "metrics"}
    # metrics only to the PgBouncer pods (their exporter: effective config and pools in use)
    reads = [r for r in policies[OPERATOR]["egress"]
             if {p["port"] for p in r["ports"]} == {"metrics"}]
    assert len(reads) == 1 and len(reads[0]["to"]) == 1
    assert _selects(reads[0]["to"][0]["podSelector"], pgb_labels)
    assert not _selects(reads[0]["to"][0]["podSelector"], app_labels)
    off = render(sets={"pgbouncer.metrics.enabled": "false"}).of_kind("NetworkPolicy")
    op_off = next(p["spec"] for p in off if p["metadata"]["name"] == OPERATOR)
    assert "metrics" not in {p["port"] for rule in op_off["egress"] for p in rule["ports"]}
    # http only to the consumers' pods (their /metrics: each worker's plan generation)
    asks = [r for r in policies[OPERATOR]["egress"] if {p["port"] for p in r["ports"]} == {"http"}]
    assert len(asks) == 1
    assert any(_selects(p["podSelector"], _pod_labels(defaults, "Deployment", APP))
               for p in asks[0]["to"])
    assert all("podSelector" in p and not p.get("ipBlock") for p in asks[0]["to"])


def test_network_policies_off_renders_none():
    r = render(ci("no-networkpolicy"))
    assert r.of_kind("NetworkPolicy") == []
    assert r.of_kind("Deployment")


# --- security ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_every_container_is_non_root_read_only_without_capabilities(values):
    r = render(*([values] if values else []))
    checked = 0
    for name, spec in r.pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["securityContext"].get("runAsUser", 1) != 0, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert sc.get("runAsUser", 1) != 0, (name, c["name"])
            assert "privileged" not in sc, (name, c["name"])
            checked += 1
    assert checked >= 4


def test_secrets_live_in_secrets_and_a_given_password_is_used():
    r = render(sets={"postgresql.auth.password": "s3cret-given"})
    import base64

    secret = r.get("Secret", f"{FULL}-db")
    assert base64.b64decode(secret["data"]["password"]).decode() == "s3cret-given"
    text = yaml.safe_dump_all([d for d in r.docs if d["kind"] != "Secret"])
    assert "s3cret-given" not in text


def test_generated_passwords_are_long_and_random():
    import base64

    a = base64.b64decode(render().get("Secret", f"{FULL}-db")["data"]["password"])
    b = base64.b64decode(render().get("Secret", f"{FULL}-db")["data"]["password"])
    assert len(a) >= 32 and a != b  # without a cluster there is nothing to keep: a fresh one


# --- names, labels, images -------------------------------------------------------------------


def test_selectors_are_immutable_subsets_of_pod_labels(defaults):
    for d in defaults.docs:
        selector = None
        if d["kind"] in ("Deployment", "StatefulSet"):
            selector = d["spec"]["selector"]["matchLabels"]
            pod = d["spec"]["template"]["metadata"]["labels"]
            assert all(pod[k] == v for k, v in selector.items()), d["metadata"]["name"]
        elif d["kind"] in ("Service",):
            selector = d["spec"]["selector"]
        elif d["kind"] == "PodDisruptionBudget":
            selector = d["spec"]["selector"]["matchLabels"]
        if selector is not None:
            assert set(selector) == {
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            }, d["metadata"]["name"]
        labels = d["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", (
            d["kind"],
            d["metadata"]["name"],
        )
        assert labels.get("app.kubernetes.io/instance") == RELEASE


def test_services_select_exactly_their_component(defaults):
    workloads = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in defaults.docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    for svc in defaults.of_kind("Service"):
        selected = [
            n
            for n, labels in workloads.items()
            if _selects({"matchLabels": svc["spec"]["selector"]}, labels)
        ]
        assert len(selected) == 1, (svc["metadata"]["name"], selected)
        assert svc["metadata"]["name"].startswith(selected[0])


def test_long_release_names_keep_every_object_name_within_63_characters():
    release = "a-very-long-release-name-that-goes-on-and-on-for-ever"  # 53: the most Helm allows
    r = render(release=release)
    names = [d["metadata"]["name"] for d in r.docs]
    budget = r.of_kind("ConnectionBudget")[0]["spec"]
    names += [budget["pgbouncer"]["sizingConfigMap"], budget["consumers"][0]["planConfigMap"]]
    for name in names:
        assert len(name) <= 63, name
    # a StatefulSet's pods carry controller-revision-hash=<name>-<10 chars>, a 63-character label
    for sts in r.of_kind("StatefulSet"):
        assert len(sts["metadata"]["name"]) <= 52, sts["metadata"]["name"]


def test_images_default_to_the_app_version_and_follow_global_registry(defaults):
    images = {c["image"] for _, spec in defaults.pod_specs() for c in spec["containers"]}
    assert images == {
        "poolwarden/app:0.1.0",
        "poolwarden/pgbouncer:0.1.0",
        "poolwarden/operator:0.1.0",
        "postgres:17",
        "prometheuscommunity/pgbouncer-exporter:v0.10.2",  # pgbouncer.metrics.enabled
    }
    assert not any(i.endswith(":latest") for i in images)
    r = render(
        sets={
            "global.imageRegistry": "registry.example:5000",
            "app.image.registry": "ignored.example",
        }
    )
    images = {c["image"] for _, spec in r.pod_specs() for c in spec["containers"]}
    assert all(i.startswith("registry.example:5000/") for i in images), images
    digest = "sha256:" + "a" * 64
    r = render(sets={"app.image.digest": digest})
    app = container(r.get("Deployment", APP)["spec"]["template"]["spec"], "app")
    assert app["image"] == f"poolwarden/app@{digest}"


# --- helm test -----------------------------------------------------------------------------------


def test_helm_test_queries_through_pgbouncer_with_our_own_image(defaults):
    [pod] = defaults.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [c] = pod["spec"]["containers"]
    pgb = container(defaults.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"], "pgbouncer")
    assert c["image"] == pgb["image"]  # our image, already on the node: no pull, no network
    env = env_of(c)
    assert env["PGHOST"]["value"] == PGBOUNCER
    assert env["PGPORT"]["value"] == "6432"
    assert "secretKeyRef" in env["PGPASSWORD"]["valueFrom"]
    script = "\n".join(c["args"])
    assert "apk" not in script and "apt" not in script and "pip" not in script
    assert "poolwarden-ok:42" in script
    assert pod["spec"]["restartPolicy"] == "Never"


def test_a_narrowed_app_ingress_still_lets_the_operator_ask_for_plan_generations():
    r = render(sets={"networkPolicy.appIngressFrom[0].podSelector.matchLabels.role": "frontend"})
    policy = next(p for p in r.of_kind("NetworkPolicy") if p["metadata"]["name"] == APP)
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"role": "frontend"}}} in peers
    operator_labels = _pod_labels(r, "Deployment", OPERATOR)
    assert any(_selects(p.get("podSelector", {}), operator_labels) for p in peers)
