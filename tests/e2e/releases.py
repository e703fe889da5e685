"""Fixture factory of chart releases for the system tests, each in a fresh namespace.

Imported by the test modules (`from releases import make_release`): a module-scoped factory,
so one installed system serves the ordered tests of one module; namespaces are deleted when
the module ends. Values are small for a 2-core machine: 1 gunicorn worker per app pod unless a
test says otherwise, small requests, a small `max_connections` so the budget is reachable.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_cluster import Cluster
from kube import Release, merge

SMALL = {"requests": {"cpu": "20m", "memory": "64Mi"}}
BASE_VALUES: dict[str, Any] = {
    "app": {
        "workers": 1,
        "replicaCount": 2,
        "preStopSleepSeconds": 3,
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "384Mi"}},
    },
    "pgbouncer": {"replicaCount": 2, "shutdownDelaySeconds": 3, "resources": SMALL},
    "postgresql": {
        "maxConnections": 40,
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    },
    "operator": {"resources": SMALL},
    "budget": {"reserved": 10},
}


@pytest.fixture(scope="module")
def make_release(cluster: Cluster) -> Iterator[Callable[..., Release]]:
    """`make_release("pw", app={"workers": 2})` -> an installed Release (helm --wait)."""
    made: list[Release] = []

    def make(name: str = "pw", **values: Any) -> Release:
        namespace = f"pw-e2e-{uuid.uuid4().hex[:8]}"
        cluster.kubectl("create", "namespace", namespace)
        release = Release(cluster, namespace, name, merge(BASE_VALUES, {}))
        made.append(release)
        seconds = release.install(**values)
        note(f"installed release {name} in namespace {namespace} in {seconds:.0f} s")
        return release

    yield make
    for release in made:
        cluster.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


@contextlib.contextmanager
def explained(release: Release) -> Iterator[None]:
    """On a failed assertion, append the release's pods, Events, logs and SHOW POOLS."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(
            f"{error}\n\n==== diagnostics of {release.namespace}\n{release.diagnostics()}"
        ) from None


def note(text: str) -> None:
    """A measurement or milestone for the run's output (`make e2e` runs pytest with -rP)."""
    sys.stdout.write(f"\n>> e2e: {text}\n")
    sys.stdout.flush()
