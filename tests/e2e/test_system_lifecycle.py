"""A release's life on a real cluster: workers changed by helm upgrade, overcommitment,
helm uninstall.

Its own release in its own namespace: a small budget (max_connections 20, reserved 10, one
PgBouncer) and few client slots in PgBouncer (budget.maxClientConn 7), so that three app pods of
two workers overcommit the client side: with their surge pod 8 workers need one connection each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from convergence import wait_converged
from kube import Release, wait_for
from releases import explained, make_release, note  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

VALUES = {
    "postgresql": {"maxConnections": 20, "persistence": {"enabled": False}},
    # 7 client slots: 1 pod of 1 worker gets 3 (its surge pod too), 1 pod of 2 workers 1 each
    # (4 of 7 with the surge pod), 3 pods of 2 workers do not fit even at 1 (8 of 7).
    "budget": {"reserved": 10, "maxClientConn": 7},
    "pgbouncer": {"replicaCount": 1},
    "app": {"replicaCount": 1, "workers": 1},
}
# Namespaced objects that exist in every namespace, whatever was installed into it.
ALWAYS_THERE = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


@pytest.fixture(scope="module")
def release(make_release) -> Iterator[Release]:  # noqa: F811
    yield make_release("life", **VALUES)


def test_helm_upgrade_changing_workers_replans(release: Release) -> None:
    with explained(release):
        first = wait_converged(release, 1, time.monotonic(), 180)
        since = time.monotonic()
        release.install(app={"workers": 2})
        spec = release.budget_object()["spec"]["consumers"][0]
        assert spec["workersPerPod"] == 2
        second = wait_converged(release, 2, since, 240)
        assert second.generation > first.generation
        assert (second.pool_size, second.max_overflow) != (first.pool_size, first.max_overflow)
        note(
            f"helm upgrade app.workers 1 -> 2: pool per worker "
            f"{first.pool_size}+{first.max_overflow} -> {second.pool_size}+"
            f"{second.max_overflow}, converged {second.converged:.1f} s after the upgrade began"
        )


def test_overcommitted_budget_is_reported(release: Release) -> None:
    with explained(release):
        since = time.monotonic()
        release.scale("app", 3)
        reaction = wait_converged(release, 2, since, 240)
        plan = release.plan_file()
        assert plan is not None and plan.overcommitted and plan.pool_size == 1
        condition = wait_for(
            "the Overcommitted condition",
            lambda: (
                c if (c := release.condition("Overcommitted")) and c["status"] == "True" else None
            ),
            timeout=60,
        )
        events = release.get(
            "events",
            "--field-selector",
            f"involvedObject.kind=ConnectionBudget,involvedObject.name={release.budget}",
        )
        warnings = [
            e for e in events["items"] if e["type"] == "Warning" and e["reason"] == "Overcommitted"
        ]
        assert warnings, "no Warning Event Overcommitted on the ConnectionBudget: " + json.dumps(
            [(e["type"], e["reason"], e["message"]) for e in events["items"]]
        )
        note(
            f"overcommitted: {condition['message']} | event: {warnings[-1]['message']}"
            f" (pods on the 1-connection plan after {reaction.converged:.1f} s)"
        )

        release.scale("app", 1)
        wait_converged(release, 2, time.monotonic(), 240)
        wait_for(
            "Overcommitted to clear",
            lambda: (
                (c := release.condition("Overcommitted")) is not None and c["status"] == "False"
            ),
            timeout=60,
        )


def test_helm_uninstall_leaves_nothing_behind(release: Release) -> None:
    cluster = release.cluster
    with explained(release):
        release.kubectl("delete", "pod", "e2e-toolbox", "--ignore-not-found", "--wait=true")
        release.helm("uninstall", release.name, "--wait", "--timeout", "5m")
        kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name")
        listable = ",".join(k for k in kinds.stdout.split() if not k.startswith("events"))

        def leftovers() -> list[tuple[str, str]]:
            items = release.get(listable)["items"]
            found = {(i["kind"], i["metadata"]["name"]) for i in items}
            return sorted(found - ALWAYS_THERE)

        remaining: list[tuple[str, str]] = []

        def empty() -> bool:
            remaining[:] = leftovers()
            return not remaining

        wait_for(
            "the namespace to be empty after helm uninstall",
            empty,
            timeout=180,
            interval=2,
            on_timeout=lambda: f"left behind: {remaining}",
        )
        cluster_wide = cluster.get_json(
            "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={release.name}"
        )
        assert not cluster_wide["items"], cluster_wide["items"]
        # Documented policy (docs/chart.md): the CRD stays, as Helm never deletes crds/.
        crd = cluster.kubectl("get", "crd", "connectionbudgets.poolwarden.io", check=False)
        assert crd.returncode == 0, "the CRD should stay after helm uninstall (crds/ policy)"
