"""Fixtures of the e2e tier: a real cluster named explicitly, never the ambient kubeconfig.

Environment:
- ``POOLWARDEN_E2E_KUBECONFIG``: path of the kubeconfig to test (required; the tests are
  skipped with a message when it is not set, `make kind-smoke` / `make e2e` set it).
- ``POOLWARDEN_E2E_KIND_CLUSTER``: name of the kind cluster behind that kubeconfig; when set,
  locally built images are loaded into it with ``kind load docker-image``. Without it the
  images must already be reachable by the cluster.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cluster import Cluster

SMOKE_IMAGE = "poolwarden/e2e-smoke:0.1.0"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    value = os.environ.get("POOLWARDEN_E2E_KUBECONFIG")
    if not value:
        pytest.skip("POOLWARDEN_E2E_KUBECONFIG is not set (run `make kind-smoke` or `make e2e`)")
    path = Path(value)
    if not path.is_file():
        raise RuntimeError(f"POOLWARDEN_E2E_KUBECONFIG={value} does not exist")
    return Cluster(kubeconfig=path, kind_name=os.environ.get("POOLWARDEN_E2E_KIND_CLUSTER"))


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"pw-e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def smoke_image(cluster: Cluster) -> str:
    """The tiny local image of tests/e2e/smoke-image, built and loaded into the cluster."""
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    subprocess.run(
        ["docker", "build", "-q", "-t", SMOKE_IMAGE, str(Path(__file__).parent / "smoke-image")],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    cluster.load_image(SMOKE_IMAGE)
    return SMOKE_IMAGE
