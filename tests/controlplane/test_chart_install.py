"""The chart against a real kube-apiserver: schema-valid objects, install, upgrade, uninstall.

- Every rendering (defaults and each `ci/*-values.yaml`) passes a server-side dry-run with
  strict field validation: that is the Kubernetes API's own schema check of every object,
  the ConnectionBudget included (checked against the CRD's OpenAPI schema).
- `helm install` (CRD from `crds/`, no `--wait`: there is no kubelet, pods stay Pending) creates
  the whole system and the ConnectionBudget is accepted as rendered.
- `helm upgrade` keeps the generated passwords, keeps a replica count chosen outside Helm when
  the HPA owns the scale, never touches the plan ConfigMap the operator wrote, and updates the
  budget from values.
- The operator's ServiceAccount, made by the chart, can read the budget through its RBAC.
- `helm uninstall` leaves none of the release's objects behind.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from polling import wait_for

PROJECT_DIR = Path(__file__).resolve().parents[2]
CHART = PROJECT_DIR / "charts" / "poolwarden"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
TOOLS_BIN = PROJECT_DIR / ".tools" / "bin"
HELM = Path(os.environ.get("HELM", TOOLS_BIN / "helm"))
KUBECTL = TOOLS_BIN / "kubectl"


def run(
    argv: list[str], stdin: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    if not os.access(argv[0], os.X_OK):
        pytest.fail(f"{argv[0]} is missing: run `make tools`", pytrace=False)
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture(scope="module")
def k(control_plane, tmp_path_factory):
    """kubectl and helm bound to the control plane's admin kubeconfig, helm state in tmp."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(control_plane.kubeconfig),
    )

    class Tools:
        kubeconfig = control_plane.kubeconfig

        @staticmethod
        def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
            proc = run(
                [str(KUBECTL), f"--kubeconfig={control_plane.kubeconfig}", *args], stdin=stdin
            )
            if check:
                assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
            return proc.stdout if check else proc

        @staticmethod
        def helm(*args: str, check: bool = True):
            proc = run([str(HELM), *args], env=env)
            if check:
                assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
                return proc.stdout
            return proc

        @staticmethod
        def get(kind: str, name: str, namespace: str) -> dict:
            return json.loads(Tools.kubectl("get", kind, name, "-n", namespace, "-o", "json"))

    return Tools


def new_namespace(k, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k.kubectl("create", "namespace", ns)
    return ns


def ensure_crds(k) -> list[str]:
    """Apply the chart's CRDs for real (idempotent) and wait until they serve."""
    crd_dir = CHART / "crds"
    files = sorted(crd_dir.glob("*.yaml")) if crd_dir.is_dir() else []
    assert files, f"{crd_dir} holds no CRD: the ConnectionBudget cannot be validated"
    names = []
    for f in files:
        k.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    for name in names:
        k.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return names


def secret_data(k, name: str, ns: str) -> dict[str, str]:
    data = k.get("secret", name, ns)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


# --- the Kubernetes API's own schema check ----------------------------------------------------


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_rendered_objects_pass_server_side_dry_run_with_strict_validation(k, values):
    assert "connectionbudgets.poolwarden.io" in ensure_crds(k)
    ns = new_namespace(k, "chart-dry")
    args = ["template", "pw", str(CHART), "--namespace", ns]
    if values:
        args += ["-f", str(values)]
    manifest = k.helm(*args)
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    proc = k.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "--server-side",
        "-n",
        ns,
        "-f",
        "-",
        stdin=manifest,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(docs), proc.stdout
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Secret", "ConnectionBudget"} <= kinds
    k.kubectl("delete", "namespace", ns, "--wait=false")


# --- install, upgrade, uninstall --------------------------------------------------------------


def test_install_upgrade_uninstall(k, control_plane):
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    release = "pw"
    full = f"{release}-poolwarden"
    hpa = str(CHART / "ci" / "hpa-values.yaml")

    out = k.helm("install", release, str(CHART), "-n", ns, "--create-namespace", "-f", hpa)
    assert "STATUS: deployed" in out
    # NOTES: how to reach the app and watch the budget, with names that exist
    notes = out.split("NOTES:", 1)[1]
    assert f"kubectl -n {ns} port-forward svc/{full}-app 8000:80" in notes
    assert f"kubectl -n {ns} get connectionbudgets" in notes
    assert f"describe connectionbudget {full}" in notes
    assert f"helm test {release} -n {ns}" in notes
    assert "max_connections 100 - reserved 10 = 90" in notes

    # the whole system exists as rendered
    for kind, name in [
        ("deployment", f"{full}-app"),
        ("deployment", f"{full}-pgbouncer"),
        ("deployment", f"{full}-operator"),
        ("statefulset", f"{full}-postgresql"),
        ("service", f"{full}-app"),
        ("service", f"{full}-pgbouncer"),
        ("service", f"{full}-postgresql"),
        ("hpa", f"{full}-app"),
        ("pdb", f"{full}-pgbouncer"),
        ("networkpolicy", f"{full}-postgresql"),
        ("serviceaccount", f"{full}-operator"),
    ]:
        k.get(kind, name, ns)
    crd = k.get("crd", "connectionbudgets.poolwarden.io", "default")
    assert crd["spec"]["group"] == "poolwarden.io"

    # the ConnectionBudget is accepted by the CRD as rendered from values
    budget = k.get("connectionbudget", full, ns)
    assert budget["spec"]["database"] == {
        "maxConnections": 100, "reserved": 10,
        "host": f"{full}-postgresql", "port": 5432, "name": "poolwarden", "role": "poolwarden",
    }  # fmt: skip
    assert budget["spec"]["pgbouncer"]["deployment"] == f"{full}-pgbouncer"
    [consumer] = budget["spec"]["consumers"]
    assert consumer["deployment"] == f"{full}-app"
    assert consumer["workersPerPod"] == 2
    assert consumer["planConfigMap"] == f"{full}-app-plan"

    # with the HPA on, Helm's manifest carries no replica count for the app (the API server
    # defaults it, the HPA owns it)
    manifest = [d for d in yaml.safe_load_all(k.helm("get", "manifest", release, "-n", ns)) if d]
    app_manifest = next(
        d for d in manifest if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{full}-app"
    )
    assert "replicas" not in app_manifest["spec"]
    db_before = secret_data(k, f"{full}-db", ns)
    pgb_before = secret_data(k, f"{full}-pgbouncer", ns)
    assert len(db_before["password"]) == 32

    # the scale is chosen outside Helm (HPA or kubectl), and the operator writes the plan
    k.kubectl("scale", "deployment", f"{full}-app", "-n", ns, "--replicas=4")
    plan = '{"generation": 7}\n'
    k.kubectl(
        "create",
        "configmap",
        consumer["planConfigMap"],
        "-n",
        ns,
        f"--from-literal=plan.json={plan}",
    )

    out = k.helm("upgrade", release, str(CHART), "-n", ns, "-f", hpa, "--set", "app.workers=3")
    assert "STATUS: deployed" in out

    # passwords were generated once and kept
    assert secret_data(k, f"{full}-db", ns) == db_before
    assert secret_data(k, f"{full}-pgbouncer", ns) == pgb_before
    # the budget and the pods follow the new value
    assert k.get("connectionbudget", full, ns)["spec"]["consumers"][0]["workersPerPod"] == 3
    app = k.get("deployment", f"{full}-app", ns)
    env = {e["name"]: e for e in app["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POOLWARDEN_WORKERS"]["value"] == "3"
    # helm upgrade did not reset the scale, nor touch the operator's plan
    assert app["spec"]["replicas"] == 4
    cm = k.get("configmap", consumer["planConfigMap"], ns)
    assert cm["data"]["plan.json"] == plan

    # a second upgrade with identical values changes no Secret (lookup, not a fresh random)
    k.helm("upgrade", release, str(CHART), "-n", ns, "-f", hpa, "--set", "app.workers=3")
    assert secret_data(k, f"{full}-db", ns) == db_before

    # uninstall leaves none of the release's objects (the CRD stays, by Helm's crds/ policy)
    k.helm("uninstall", release, "-n", ns)
    selector = f"app.kubernetes.io/instance={release}"
    kinds = "deployments,statefulsets,services,secrets,hpa,pdb,networkpolicies,serviceaccounts"

    def nothing_left():
        left = k.kubectl("get", kinds, "-n", ns, "-l", selector, "-o", "name")
        budgets = k.kubectl("get", "connectionbudgets", "-n", ns, "-o", "name")
        return (left + budgets).strip() == ""

    wait_for("release objects gone after helm uninstall", nothing_left, timeout=60)
    k.get("crd", "connectionbudgets.poolwarden.io", "default")
    k.kubectl("delete", "namespace", ns, "--wait=false")


def test_operator_serviceaccount_made_by_the_chart_can_read_its_budget_and_no_secret(
    k, control_plane
):
    if not (CHART / "templates" / "operator-rbac.yaml").exists():
        pytest.fail(
            "charts/poolwarden/templates/operator-rbac.yaml is missing: the operator has no RBAC"
        )
    ns = f"chart-rbac-{uuid.uuid4().hex[:6]}"
    full = "pw-poolwarden"
    k.helm(
        "install",
        "pw",
        str(CHART),
        "-n",
        ns,
        "--create-namespace",
        "-f",
        str(CHART / "ci" / "no-persistence-values.yaml"),
    )
    sa_kubeconfig = control_plane.service_account_kubeconfig(ns, f"{full}-operator")
    proc = run(
        [
            str(KUBECTL),
            f"--kubeconfig={sa_kubeconfig}",
            "get",
            "connectionbudgets",
            "-n",
            ns,
            "-o",
            "name",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"connectionbudget.poolwarden.io/{full}"
    # least privilege: the operator never reads the database password
    proc = run(
        [str(KUBECTL), f"--kubeconfig={sa_kubeconfig}", "get", "secret", f"{full}-db", "-n", ns]
    )
    assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), proc.stdout + proc.stderr

    # without the HPA, the chart owns the scale: helm upgrade puts app.replicaCount back
    # (the contrast to the HPA case above; docs/chart.md says so)
    k.kubectl("scale", "deployment", f"{full}-app", "-n", ns, "--replicas=3")
    k.helm(
        "upgrade",
        "pw",
        str(CHART),
        "-n",
        ns,
        "-f",
        str(CHART / "ci" / "no-persistence-values.yaml"),
    )
    assert k.get("deployment", f"{full}-app", ns)["spec"]["replicas"] == 2
    k.helm("uninstall", "pw", "-n", ns)
    k.kubectl("delete", "namespace", ns, "--wait=false")
