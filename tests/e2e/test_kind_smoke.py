"""Smoke test of a cluster for poolwarden (kind, offline node image or not).

Shows that the cluster can run what the e2e tier needs: a pod of a locally built image
answers through a Service by its DNS name from a pod on another node, and a PersistentVolumeClaim
bound through the default StorageClass keeps its data when its pod is deleted.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from e2e_cluster import Cluster

pytestmark = pytest.mark.e2e

CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}


def _pod(name: str, image: str, command: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
    }
    if command is not None:
        container["command"] = command
    for key in ("volumeMounts", "ports", "readinessProbe"):
        if key in spec:
            container[key] = spec.pop(key)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container], "tolerations": [CONTROL_PLANE_TAINT], **spec},
    }


def _on_node(node: str) -> dict[str, Any]:
    return {"nodeSelector": {"kubernetes.io/hostname": node}}


def _ready_nodes(cluster: Cluster) -> list[str]:
    nodes = cluster.get_json("nodes")["items"]
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert ready, "no Ready node in the cluster"
    return sorted(ready)


def test_nodes_ready_and_system_pods_running(cluster: Cluster) -> None:
    # A cluster that was just created may still be joining a node: wait, bounded.
    cluster.kubectl(
        "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s", timeout=200
    )
    nodes = cluster.get_json("nodes")["items"]
    assert _ready_nodes(cluster) == sorted(n["metadata"]["name"] for n in nodes)
    deadline = time.monotonic() + 180
    while True:
        pods = cluster.get_json("pods", "-n", "kube-system")["items"]
        not_running = [
            p["metadata"]["name"]
            for p in pods
            if p["status"].get("phase") not in ("Running", "Succeeded")
        ]
        if not not_running or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not not_running, f"kube-system pods not running after 180 s: {not_running}"
    names = " ".join(p["metadata"]["name"] for p in pods)
    for component in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "coredns",
    ):
        assert component in names, f"no {component} pod in kube-system"


def test_service_answers_by_dns_name_from_another_node(
    cluster: Cluster, namespace: str, smoke_image: str
) -> None:
    nodes = _ready_nodes(cluster)
    server_node, client_node = nodes[-1], nodes[0]
    token = uuid.uuid4().hex
    serve = f"printf %s {token} > /srv/www/token && exec python3 -m http.server 8000 -d /srv/www"
    web = _pod(
        "web",
        smoke_image,
        ["sh", "-c", serve],
        ports=[{"containerPort": 8000}],
        readinessProbe={"tcpSocket": {"port": 8000}, "periodSeconds": 1},
        **_on_node(server_node),
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    url = f"http://web.{namespace}.svc.cluster.local/token"
    fetch = (
        f"URL = {url!r}\n"
        "import sys, time, urllib.request\n"
        "deadline = time.monotonic() + 60\n"
        "while True:\n"
        "    try:\n"
        "        print(urllib.request.urlopen(URL, timeout=5).read().decode())\n"
        "        break\n"
        "    except Exception as exc:\n"
        "        if time.monotonic() > deadline:\n"
        "            sys.exit(f'no answer from {URL}: {exc}')\n"
        "        time.sleep(1)\n"
    )
    client = _pod(
        "client",
        smoke_image,
        ["python3", "-c", fetch],
        restartPolicy="Never",
        **_on_node(client_node),
    )
    cluster.apply(namespace, web, service)
    cluster.wait_pod_phase(namespace, "web", "Running")
    cluster.apply(namespace, client)
    cluster.wait_pod_phase(namespace, "client", "Succeeded")

    assert cluster.kubectl("logs", "-n", namespace, "client").stdout.strip() == token
    placed = {
        p["metadata"]["name"]: p["spec"]["nodeName"]
        for p in cluster.get_json("pods", "-n", namespace)["items"]
    }
    if len(nodes) > 1:
        assert placed["web"] != placed["client"], f"both pods on one node: {placed}"


def test_pvc_binds_through_default_storage_class_and_outlives_its_pod(
    cluster: Cluster, namespace: str, smoke_image: str
) -> None:
    classes = cluster.get_json("storageclasses")["items"]
    defaults = [
        c["metadata"]["name"]
        for c in classes
        if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class")
        == "true"
    ]
    assert len(defaults) == 1, f"expected one default StorageClass, found {defaults}"
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    mount = [{"name": "data", "mountPath": "/data"}]
    token = uuid.uuid4().hex

    writer = _pod(
        "writer",
        smoke_image,
        ["sh", "-c", f"printf %s {token} > /data/token && sync"],
        restartPolicy="Never",
        volumeMounts=mount,
        **volume,
    )
    cluster.apply(namespace, claim, writer)
    cluster.wait_pod_phase(namespace, "writer", "Succeeded")
    pvc = cluster.get_json("pvc", "data", "-n", namespace)
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["storageClassName"] == defaults[0]

    cluster.kubectl("delete", "pod", "writer", "-n", namespace, "--wait=true")
    reader = _pod(
        "reader",
        smoke_image,
        ["cat", "/data/token"],
        restartPolicy="Never",
        volumeMounts=mount,
        **volume,
    )
    cluster.apply(namespace, reader)
    cluster.wait_pod_phase(namespace, "reader", "Succeeded")
    assert cluster.kubectl("logs", "-n", namespace, "reader").stdout.strip() == token
