"""Several consumers share one budget on a real cluster: the reference FastAPI app, the Flask
reference service listed in values (gunicorn gthread workers x threads with --preload, run from
its image with values alone, ci/consumers-values.yaml), and
a Deployment applied with plain kubectl that joins by label (docs/examples/labelled-deployment.yaml,
applied as documented with only names and image replaced). Each gets its own plan ConfigMap
and PgBouncer alias, split by weight; scaling each re-plans live with no restart; unlabelled,
the Deployment leaves. User load runs through two consumers throughout and pg_stat_activity is
sampled: it never exceeds the budget.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from e2e_cluster import ROOT
from kube import APP_IMAGE, CHART, Release, is_ready, wait_for
from releases import explained, make_release, note  # noqa: F401  (fixture)
from traffic import Sampler, UserLoad

from poolwarden import pgbouncer_ini, planfile, planner

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "docs" / "examples" / "labelled-deployment.yaml"
LISTED = yaml.safe_load((CHART / "ci" / "consumers-values.yaml").read_text())["consumers"]
CONVERGE_TIMEOUT = 300.0
USERS = 8  # per loaded consumer: 16 users of 1-second transactions against a budget of 30


@dataclass(frozen=True)
class Consumer:
    name: str
    deployment: str
    selector: str
    workers: int
    threads: int
    weight: int
    overflow: str


@dataclass
class System:
    release: Release
    sampler: Sampler
    loads: list[UserLoad]
    budget: int
    consumers: list[Consumer]
    started: float


def listed(release: Release) -> list[Consumer]:
    """The consumers the ConnectionBudget lists (the app and the values-listed one)."""
    found = []
    for c in release.budget_object()["spec"]["consumers"]:
        component = "app" if c["name"] == "app" else "consumer"
        selector = release.selector(component)
        if component == "consumer":
            selector += f",poolwarden.io/consumer={c['name']}"
        found.append(
            Consumer(
                c["name"], c["deployment"], selector, c["workersPerPod"],
                c.get("threadsPerWorker", 0), c["weight"], c["overflow"],
            )
        )  # fmt: skip
    return found


def expected(release: Release, consumers: list[Consumer]) -> planner.Plan:
    """The planner's answer (computed here) for every consumer at its current scale."""
    spec = release.budget_object()["spec"]
    bouncer = release.get("deployment", release.pgbouncer)

    def surge(d: dict[str, Any]) -> int:
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        kind = (d["spec"].get("strategy") or {}).get("type", "RollingUpdate")
        return planner.resolve_surge(d["spec"]["replicas"], kind, rolling.get("maxSurge"))

    planned = []
    for c in consumers:
        d = release.get("deployment", c.deployment)
        planned.append(
            planner.Consumer(
                c.name, d["spec"]["replicas"], c.workers, weight=c.weight, surge=surge(d),
                overflow=c.overflow, threads=c.threads,
            )
        )  # fmt: skip
    return planner.plan(
        planner.Budget(spec["database"]["maxConnections"], spec["database"]["reserved"]),
        planner.PgBouncer(
            bouncer["spec"]["replicas"], surge(bouncer), spec["pgbouncer"]["maxClientConn"]
        ),
        planned,
    )


def mismatch(release: Release, consumers: list[Consumer]) -> str | None:
    """What is still off the planner's plan for every consumer (None: nothing)."""
    plan = expected(release, consumers)
    text = release.configmap_text(f"{release.fullname}-pgbouncer-sizing", "sizing.ini")
    if text is None:
        return "no sizing ConfigMap"
    sizing = pgbouncer_ini.parse(text)
    want_aliases = {c.name: c.server_pool for c in plan.consumers}
    got_aliases = {d.name: d.pool_size for d in sizing.databases}
    if got_aliases != want_aliases:
        return f"sizing aliases {got_aliases}, planner says {want_aliases}"
    for c in consumers:
        part = plan.consumer(c.name)
        text = release.configmap_text(f"{release.budget}-{c.name}-plan", planfile.FILE_NAME)
        if text is None:
            return f"no plan ConfigMap for {c.name}"
        file = planfile.parse(text)
        if (file.consumer, file.pool_size, file.max_overflow) != (
            c.name, part.pool_size, part.max_overflow
        ):  # fmt: skip
            return f"{c.name}: plan file {file}, planner says {part.pool_size}+{part.max_overflow}"
        pods = release.get("pods", "-l", c.selector)["items"]
        ready = [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
        replicas = release.get("deployment", c.deployment)["spec"]["replicas"]
        if len(ready) != replicas or len(pods) != replicas:
            return f"{c.name}: {len(ready)} ready of {len(pods)} pods, want {replicas}"
        answers = release.app_pools(ready, c.workers)
        for pod in ready:
            seen = answers.get(pod["metadata"]["name"], {})
            if len(seen) < c.workers:
                return f"{c.name} pod {pod['metadata']['name']}: {len(seen)} workers answered"
            for pid, status in seen.items():
                got = (status["generation"], status["pool_size"], status["max_overflow"])
                if got != (file.generation, file.pool_size, file.max_overflow):
                    return f"{c.name} pod {pod['metadata']['name']} worker {pid}: {got}"
    for pod in release.ready_pods("pgbouncer"):
        databases = release.pgbouncer_databases(pod["metadata"]["name"])
        got = {a: int(databases[a]["pool_size"]) for a in want_aliases if a in databases}
        if got != want_aliases:
            return f"pgbouncer {pod['metadata']['name']}: SHOW DATABASES {got}"
    return None


def converge(system: System, what: str) -> float:
    since = time.monotonic()
    state = {"why": ""}

    def probe() -> bool:
        state["why"] = mismatch(system.release, system.consumers) or ""
        return not state["why"]

    wait_for(
        what, probe, timeout=CONVERGE_TIMEOUT, interval=0.5,
        on_timeout=lambda: f"still off: {state['why']}",
    )  # fmt: skip
    return time.monotonic() - since


def restarts(release: Release, consumers: list[Consumer]) -> dict[str, int]:
    counts = {}
    for c in consumers:
        for p in release.get("pods", "-l", c.selector)["items"]:
            statuses = p.get("status", {}).get("containerStatuses") or []
            counts[p["metadata"]["uid"]] = sum(s.get("restartCount", 0) for s in statuses)
    return counts


def labelled_manifest(release: Release) -> dict[str, Any]:
    """docs/examples/labelled-deployment.yaml for this release: names and image replaced."""
    text = EXAMPLE.read_text().replace("shop-poolwarden", release.fullname)
    text = text.replace("registry.example.com/shop/web:1.0", APP_IMAGE)
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def system(make_release) -> Iterator[System]:  # noqa: F811
    start = time.monotonic()
    release = make_release(
        "multi",
        postgresql={"persistence": {"enabled": False}},
        app={"replicaCount": 1},
        consumers=LISTED,
    )
    note(f"consumers: release with the app and {LISTED[0]['name']} installed in "
         f"{time.monotonic() - start:.0f} s")  # fmt: skip
    database = release.budget_object()["spec"]["database"]
    with explained(release):
        sampler = Sampler(release).start()
        loads = [
            UserLoad(release, users=USERS, max_seconds=900).start(),
            UserLoad(
                release, users=USERS, max_seconds=900,
                service=f"{release.fullname}-{LISTED[0]['name']}",
            ).start(),
        ]  # fmt: skip
    system = System(
        release, sampler, loads, database["maxConnections"] - database["reserved"],
        listed(release), time.time(),
    )  # fmt: skip
    yield system
    sampler.stop()
    for load in loads:
        load.stop()


def test_each_listed_consumer_gets_its_own_plan_and_alias(system: System) -> None:
    with explained(system.release):
        seconds = converge(system, "the app and the listed consumer on their plans")
        sizing = system.release.sizing_file()
        aliases = {d.name: d.pool_size for d in sizing.databases}
        note(f"consumers: listed ones converged in {seconds:.1f} s; aliases {aliases}")
        listed_name = LISTED[0]["name"]
        assert set(aliases) == {"app", listed_name}
        assert aliases[listed_name] >= 2 * aliases["app"] - 1  # weight 2:1
        threads = LISTED[0]["threadsPerWorker"]
        flask = expected(system.release, system.consumers).consumer(listed_name)
        note(f"consumers: {listed_name} ({LISTED[0]['workers']} workers x {threads} threads) "
             f"pool {flask.pool_size}+{flask.max_overflow} per worker")
        assert 1 <= flask.pool_size + flask.max_overflow <= threads  # never more than its threads


def test_a_deployment_applied_with_kubectl_joins_and_scales_live(system: System) -> None:
    release = system.release
    with explained(release):
        manifest = labelled_manifest(release)
        annotations = manifest["metadata"]["annotations"]
        since = time.monotonic()
        release.cluster.apply(release.namespace, manifest)
        system.consumers.append(
            Consumer(
                "web", "web", "app=web", int(annotations["poolwarden.io/workers"]),
                int(annotations["poolwarden.io/threads"]),
                int(annotations["poolwarden.io/weight"]), "none",
            )
        )  # fmt: skip
        converge(system, "the labelled Deployment to join and every consumer on its plan")
        joined = time.monotonic() - since
        status = release.budget_object()["status"]
        assert {"name": "web", "deployment": "web", "namespace": ""} in status["discovered"]
        aliases = {d.name: d.pool_size for d in release.sizing_file().databases}
        note(f"consumers: kubectl-applied Deployment joined and served its plan {joined:.1f} s "
             f"after kubectl apply (pod start included); aliases {aliases}")  # fmt: skip

        before = restarts(release, system.consumers)
        scaled = ((f"{release.fullname}-{LISTED[0]['name']}", 2), ("web", 2), (release.app, 2))
        for deployment, replicas in scaled:
            since = time.monotonic()
            release.kubectl("scale", "deployment", deployment, f"--replicas={replicas}")
            seconds = converge(system, f"{deployment} scaled to {replicas}, every consumer on plan")
            note(f"consumers: {deployment} -> {replicas}: every pod of every consumer on the "
                 f"plan {seconds:.1f} s after kubectl scale")  # fmt: skip
        after = restarts(release, system.consumers)
        assert all(after[uid] == n for uid, n in before.items() if uid in after), (before, after)


def test_unlabelled_it_leaves_and_the_budget_held_throughout(system: System) -> None:
    release = system.release
    with explained(release):
        since = time.monotonic()
        release.kubectl("label", "deployment", "web", "poolwarden.io/budget-")
        system.consumers = [c for c in system.consumers if c.name != "web"]
        converge(system, "web to leave the budget")
        assert release.budget_object()["status"]["discovered"] == []
        note(
            f"consumers: unlabelled Deployment left the budget in {time.monotonic() - since:.1f} s"
        )

        peak = system.sampler.peak(system.started)
        windows = [load.window() for load in system.loads]
        note(
            f"consumers: pg_stat_activity peak {peak} of budget {system.budget} over "
            f"{len(system.sampler.between(system.started))} samples; user load "
            + " | ".join(w.summary() for w in windows)
        )
        assert peak <= system.budget, f"pg_stat_activity reached {peak}, budget {system.budget}"
        for window in windows:
            assert window.ok > 0 and window.failed == 0, window.summary()
        record = {
            "peak": peak, "budget": system.budget,
            "requests": [w.ok for w in windows], "failed": [w.failed for w in windows],
        }  # fmt: skip
        out = ROOT / ".state" / "measurements" / "e2e-consumers.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
