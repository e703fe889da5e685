"""The release `make deploy` / `make up` installed, reached the way `make up` tells a user to.

Runs only when POOLWARDEN_E2E_DEPLOY_RELEASE and POOLWARDEN_E2E_DEPLOY_NAMESPACE name it
(`make e2e` does) and the app's NodePort 30080 answers on 127.0.0.1 (kind-config.yaml maps it).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid

import pytest
import yaml
from e2e_cluster import Cluster
from kube import CHART, Release, wait_for
from releases import explained

pytestmark = pytest.mark.e2e

APP_URL = "http://127.0.0.1:30080"


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Release:
    name = os.environ.get("POOLWARDEN_E2E_DEPLOY_RELEASE")
    namespace = os.environ.get("POOLWARDEN_E2E_DEPLOY_NAMESPACE")
    if not name or not namespace:
        pytest.skip("POOLWARDEN_E2E_DEPLOY_RELEASE / _NAMESPACE not set (make e2e sets them)")
    return Release(cluster, namespace, name)


def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        APP_URL + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def test_app_answers_on_localhost_nodeport(deployed: Release) -> None:
    with explained(deployed):
        wait_for(
            "the app on 127.0.0.1:30080",
            lambda: call("GET", "/readyz")[0] == 200,
            timeout=120,
            interval=2,
        )
        name = f"deploy-{uuid.uuid4().hex[:8]}"
        status, item = call("POST", "/items", {"name": name})
        assert status == 201 and item["name"] == name, (status, item)
        status, again = call("GET", f"/items/{item['id']}")
        assert status == 200 and again["name"] == name, (status, again)
        status, pool = call("GET", "/pool")
        plan = deployed.plan_file()
        assert plan is not None and status == 200
        assert (pool["generation"], pool["pool_size"]) == (plan.generation, plan.pool_size)


def test_helm_test_passes(deployed: Release) -> None:
    with explained(deployed):
        result = deployed.helm("test", deployed.name, "--timeout", "3m")
        assert "Succeeded" in result.stdout, result.stdout


def test_the_served_crd_is_the_charts(deployed: Release) -> None:
    """Helm installs crds/ once and never upgrades it: `make deploy` applies the chart's CRD
    itself, so a cluster kept from an older checkout serves the status fields this operator
    writes (an old schema silently prunes them)."""
    chart = yaml.safe_load((CHART / "crds" / "connectionbudgets.poolwarden.io.yaml").read_text())
    served = json.loads(
        deployed.cluster.kubectl(
            "get", "crd", chart["metadata"]["name"], "-o", "json"
        ).stdout
    )
    assert [v["schema"] for v in served["spec"]["versions"]] == [
        v["schema"] for v in chart["spec"]["versions"]
    ]
    assert [v.get("additionalPrinterColumns") for v in served["spec"]["versions"]] == [
        v.get("additionalPrinterColumns") for v in chart["spec"]["versions"]
    ]
