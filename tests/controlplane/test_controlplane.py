"""The local control plane is a real one: it answers, its controllers run, RBAC is enforced,
and stopping it leaves no process behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from polling import wait_for

PROJECT_DIR = Path(__file__).resolve().parents[2]
KUBECTL = PROJECT_DIR / ".tools" / "bin" / "kubectl"


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not os.access(KUBECTL, os.X_OK):
        pytest.fail(f"{KUBECTL} is missing: run `make tools`", pytrace=False)
    return subprocess.run(
        [str(KUBECTL), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def kubectl_ok(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = kubectl(kubeconfig, *args, stdin=stdin)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def test_apiserver_answers_with_the_pinned_version_and_apis(control_plane):
    assert control_plane.server.startswith("https://127.0.0.1:")
    version = json.loads(kubectl_ok(control_plane.kubeconfig, "get", "--raw", "/version"))
    assert version["gitVersion"] == "v1.32.2"
    assert kubectl_ok(control_plane.kubeconfig, "get", "--raw", "/readyz").strip() == "ok"
    groups = kubectl_ok(control_plane.kubeconfig, "api-versions").split()
    for group in ("apps/v1", "policy/v1", "autoscaling/v2", "rbac.authorization.k8s.io/v1"):
        assert group in groups


def test_controller_manager_turns_a_deployment_into_a_replicaset(control_plane):
    ns = f"cp-deploy-{uuid.uuid4().hex[:6]}"
    kubectl_ok(control_plane.kubeconfig, "create", "namespace", ns)
    kubectl_ok(
        control_plane.kubeconfig,
        "-n",
        ns,
        "create",
        "deployment",
        "web",
        "--image=registry.invalid/web:1",
        "--replicas=2",
    )

    def replicasets():
        out = kubectl_ok(control_plane.kubeconfig, "-n", ns, "get", "replicasets", "-o", "json")
        return [
            rs
            for rs in json.loads(out)["items"]
            if any(
                o["kind"] == "Deployment" and o["name"] == "web"
                for o in rs["metadata"].get("ownerReferences", [])
            )
        ]

    (rs,) = wait_for("a ReplicaSet owned by deployment/web", replicasets)
    assert rs["spec"]["replicas"] == 2

    # The ReplicaSet controller creates the pods too (no scheduler or node: they stay Pending).
    def pods():
        out = kubectl_ok(control_plane.kubeconfig, "-n", ns, "get", "pods", "-o", "json")
        return [
            p
            for p in json.loads(out)["items"]
            if any(
                o["kind"] == "ReplicaSet" and o["name"] == rs["metadata"]["name"]
                for o in p["metadata"].get("ownerReferences", [])
            )
        ]

    wait_for("2 pods owned by the ReplicaSet", lambda: len(pods()) == 2)


def test_service_account_token_is_limited_to_its_rbac(control_plane):
    ns = f"cp-rbac-{uuid.uuid4().hex[:6]}"
    sa_kubeconfig = control_plane.service_account_kubeconfig(ns, "reader")
    kubectl_ok(
        control_plane.kubeconfig,
        "-n",
        ns,
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
    )
    kubectl_ok(
        control_plane.kubeconfig,
        "-n",
        ns,
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        f"--serviceaccount={ns}:reader",
    )

    whoami = json.loads(kubectl_ok(sa_kubeconfig, "auth", "whoami", "-o", "json"))
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"
    kubectl_ok(sa_kubeconfig, "-n", ns, "get", "pods")  # granted

    for args in (
        ("-n", ns, "get", "secrets"),  # not granted in its namespace
        ("-n", "kube-system", "get", "pods"),  # granted only in its own namespace
        ("-n", ns, "create", "configmap", "x"),
    ):  # read-only role
        denied = kubectl(sa_kubeconfig, *args)
        assert denied.returncode != 0, f"{args} should be forbidden"
        assert "forbidden" in denied.stderr.lower(), denied.stderr


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_cli_up_and_down_leave_no_process_behind(tmp_path):
    """`tools/controlplane.py up DIR` / `down DIR`, as a human runs them."""
    controlplane = sys.modules["poolwarden_tools_controlplane"]  # loaded by conftest.py

    missing = controlplane.missing_binaries()
    if missing:
        pytest.fail("\n".join(missing), pytrace=False)
    script = PROJECT_DIR / "tools" / "controlplane.py"
    root = tmp_path / "cp"
    up = subprocess.run(
        [sys.executable, str(script), "up", str(root)], capture_output=True, text=True, timeout=300
    )
    state_file = root / "controlplane.json"
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"export KUBECONFIG={root.resolve() / 'admin.kubeconfig'}" in up.stdout
        state = json.loads(state_file.read_text())
        pids = [int(p) for p in state["pids"].values()]
        assert len(pids) == 3 and all(controlplane.pid_alive(p) for p in pids)
        assert kubectl_ok(root / "admin.kubeconfig", "get", "--raw", "/readyz").strip() == "ok"
    finally:
        down = subprocess.run(
            [sys.executable, str(script), "down", str(root)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [p for p in pids if controlplane.pid_alive(p)]
    assert not any(_port_open(port) for port in state["ports"].values())
    assert not state_file.exists()
