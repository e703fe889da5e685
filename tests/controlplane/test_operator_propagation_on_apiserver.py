"""How fast a scale event reaches every pod of a large consumer, against a real kube-apiserver.

The operator runs as in test_operator.py (its ServiceAccount, the chart's Role and admission
policies). A consumer of 1,000 pod objects (no kubelet: they stay Pending) is scaled to 500;
watches on the plan ConfigMap and on the pods time the propagation from the scale: the plan
ConfigMap written, the first and the last remaining pod carrying the new generation
(``poolwarden.io/plan-generation``, the kubelet's nudge). The apiserver's own ``/metrics``
counts the writes the event caused. The figures are printed and written to
``.state/measurements/operator-propagation.json``; only counts are asserted, never a clock.

The Deployment is paused and never had a ReplicaSet, so the controller-manager (20 requests a
second) neither creates nor deletes its pods: the test creates the 1,000 pods and, right after
the scale, deletes 500 of them at once as a fast ReplicaSet controller would.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import threading
import time

import kubernetes
from prometheus_client.parser import text_string_to_metric_families
from test_operator import (  # noqa: F401  (fixtures)
    DEFAULT_CONSUMERS,
    admin,
    cluster,
    crd,
    expected_pool,
    operator_account,
    rbac_documents,
    rbac_values,
    record,
    render_rbac,
    run_operator,
    wait_for,
)

from poolwarden import planfile

PODS = 1000
AFTER = 500
CLIENTS = 10_000  # large enough that 1,000 -> 500 pods changes each pod's pool (4 -> 8)
ANNOTATION = "poolwarden.io/plan-generation"
PLAN = "budget-app-plan"
WRITES = ("POST", "PATCH", "PUT")


def make_paused_consumer(view, name: str, replicas: int) -> None:
    """A Deployment whose pods the test owns: paused from birth, it never gets a ReplicaSet."""
    labels = {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "paused": True,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "poolwarden.invalid/none:0"}]},
            },
        },
    }
    view.apps.create_namespaced_deployment(view.ns, body)


def make_pods(view, name: str, count: int, keep: int) -> None:
    """``count`` pods matching the Deployment's selector; those past ``keep`` labelled to go."""

    def one(i: int) -> None:
        group = "keep" if i < keep else "go"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-{i:04d}", "labels": {"app": name, "group": group}},
            "spec": {"containers": [{"name": "main", "image": "poolwarden.invalid/none:0"}]},
        }
        view.core.create_namespaced_pod(view.ns, body, _preload_content=False)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def writes(api, server) -> dict[str, float]:
    """Write requests the apiserver has served so far, by "VERB resource[/subresource]"."""
    response = api.rest_client.pool_manager.request("GET", f"{server}/metrics")
    assert response.status == 200, response.status
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(response.data.decode()):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name != "apiserver_request_total" or labels.get("verb") not in WRITES:
                continue
            what = labels.get("resource", "") + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            key = f"{labels['verb']} {what}"
            found[key] = found.get(key, 0.0) + sample.value
    return found


class Recorder:
    """Watches the namespace's pods and the plan ConfigMap; keeps when each thing was seen."""

    def __init__(self, view) -> None:
        self.cluster = view
        self.lock = threading.Lock()
        self.pods: dict[str, str | None] = {}  # live pod -> its annotation
        self.gone: set[str] = set()
        self.changes: list[tuple[float, str, str | None]] = []  # (t, pod, new annotation)
        self.plans: list[tuple[float, int]] = []  # (t, generation) as the ConfigMap changes
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> Recorder:
        listed = json.loads(
            self.cluster.core.list_namespaced_pod(
                self.cluster.ns, label_selector="app=app", _preload_content=False
            ).data
        )
        for pod in listed["items"]:
            self.pods[pod["metadata"]["name"]] = (pod["metadata"].get("annotations") or {}).get(
                ANNOTATION
            )
        version = listed["metadata"]["resourceVersion"]
        self.threads = [
            threading.Thread(target=self._watch_pods, args=(version,), daemon=True),
            threading.Thread(target=self._watch_plan, daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _stream(self, call, **kwargs):
        """Events as plain dicts (the wrapper has no return type, so nothing is decoded into
        models: the test's own CPU stays small next to the operator's)."""

        def listing(*args, **more):
            return call(*args, **more)

        watch = kubernetes.watch.Watch()
        while not self.stop.is_set():
            for event in watch.stream(listing, self.cluster.ns, timeout_seconds=2, **kwargs):
                yield event
                if self.stop.is_set():
                    watch.stop()
                    return
                kwargs["resource_version"] = event["raw_object"]["metadata"]["resourceVersion"]

    def _watch_pods(self, version: str) -> None:
        for event in self._stream(
            self.cluster.core.list_namespaced_pod, label_selector="app=app",
            resource_version=version,
        ):  # fmt: skip
            now = time.monotonic()
            meta = event["raw_object"]["metadata"]
            name, value = meta["name"], (meta.get("annotations") or {}).get(ANNOTATION)
            with self.lock:
                if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
                    self.gone.add(name)
                    self.pods.pop(name, None)
                    continue
                if self.pods.get(name) != value:
                    self.changes.append((now, name, value))
                self.pods[name] = value

    def _watch_plan(self) -> None:
        for event in self._stream(
            self.cluster.core.list_namespaced_config_map, field_selector=f"metadata.name={PLAN}"
        ):
            now = time.monotonic()
            text = (event["raw_object"].get("data") or {}).get(planfile.FILE_NAME)
            if text:
                generation = planfile.parse(text).generation
                with self.lock:
                    if not self.plans or self.plans[-1][1] != generation:
                        self.plans.append((now, generation))

    def all_on(self, generation: int, count: int) -> bool:
        want = str(generation)
        with self.lock:
            return len(self.pods) == count and all(v == want for v in self.pods.values())


def test_1000_pods_carry_the_new_generation_after_a_scale_to_500(
    cluster,  # noqa: F811
    run_operator,  # noqa: F811
    admin,  # noqa: F811
    control_plane,  # noqa: F811
):
    before, after = expected_pool(PODS, clients=CLIENTS), expected_pool(AFTER, clients=CLIENTS)
    assert before.consumers[0].pool_size != after.consumers[0].pool_size
    cluster.make_deployment("pgbouncer", 1)
    make_paused_consumer(cluster, "app", PODS)
    started = time.monotonic()
    make_pods(cluster, "app", PODS, keep=AFTER)
    created = time.monotonic() - started
    assert len(cluster.pods("app=app")) == PODS, "the paused Deployment must make no pods"
    cluster.make_budget(consumers=DEFAULT_CONSUMERS, maxClientConn=CLIENTS)
    run_operator()
    first = wait_for(
        f"the plan for {PODS} pods",
        lambda: (p := cluster.plan()) and p.pool_size == before.consumers[0].pool_size and p,
        timeout=120,
    )
    recorder = Recorder(cluster).start()
    try:
        wait_for(
            f"the first generation on all {PODS} pods",
            lambda: recorder.all_on(first.generation, PODS),
            timeout=300, interval=0.1,
        )  # fmt: skip
        time.sleep(2)  # no pass in flight when the writes are counted
        counted = writes(admin, control_plane.server)
        with recorder.lock:
            recorder.changes.clear()
        t0 = time.monotonic()
        cluster.scale("app", AFTER)
        cluster.core.delete_collection_namespaced_pod(
            cluster.ns, label_selector="app=app,group=go", grace_period_seconds=0
        )
        plan = wait_for(
            f"the plan for {AFTER} pods",
            lambda: (p := cluster.plan()) and p.pool_size == after.consumers[0].pool_size and p,
            timeout=120, interval=0.01,
        )  # fmt: skip
        wait_for(
            f"the new generation on all {AFTER} remaining pods",
            lambda: recorder.all_on(plan.generation, AFTER),
            timeout=300, interval=0.01,
        )  # fmt: skip
        done = time.monotonic()
        time.sleep(3)  # the pass finishes: its status and Event are counted too
        with recorder.lock:
            changes = [(t - t0, pod) for t, pod, v in recorder.changes if v == str(plan.generation)]
            plan_at = [t - t0 for t, g in recorder.plans if g == plan.generation]
            kept = set(recorder.pods)
    finally:
        recorder.close()
    delta = {
        k: v - counted.get(k, 0.0)
        for k, v in writes(admin, control_plane.server).items()
        if v - counted.get(k, 0.0) > 0
    }
    on_kept = sorted(t for t, pod in changes if pod in kept)
    figures = {
        "pods_before": PODS,
        "pods_after": AFTER,
        "create_pods_seconds": round(created, 3),
        "scale_to_plan_configmap_seconds": round(plan_at[0], 3) if plan_at else None,
        "scale_to_first_pod_on_new_generation_seconds": round(on_kept[0], 3),
        "scale_to_last_pod_on_new_generation_seconds": round(on_kept[-1], 3),
        "scale_to_all_seen_seconds": round(done - t0, 3),
        "pods_patched_then_deleted": len({pod for _, pod in changes} - kept),
        "api_writes_during_the_event": delta,
    }
    record("operator-propagation", figures)
    shown = json.dumps(figures, sort_keys=True)
    sys.stderr.write(f"\npropagation {PODS} -> {AFTER} pods: {shown}\n")

    # Counts only: every remaining pod got the new generation, the plan was written, and no
    # pod was patched more than once for the event (at most one PATCH per pod listed).
    assert len(on_kept) == AFTER
    assert delta.get("PATCH configmaps", 0) >= 1
    assert AFTER <= delta.get("PATCH pods", 0) <= PODS
