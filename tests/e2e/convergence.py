"""Is the whole release on the plan the planner gives for its current scale, and since when?

`mismatch(release)` returns None when: the plan and sizing ConfigMaps hold what the planner
computes (here, independently of the operator) for the Deployments' current replicas; the app
Deployment has all its replicas ready and every worker of every ready app pod reports that
plan's generation and sizes on /pool; every ready PgBouncer's SHOW CONFIG shows the sizing.
Otherwise it returns what is still off, so a timeout says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kube import Release, is_ready, wait_for

from poolwarden import pgbouncer_ini, planfile


@dataclass
class Reaction:
    """Seconds from the scale command until ..."""

    plan_written: float  # ... the plan or sizing ConfigMap holds the new plan
    in_place: float  # ... every app pod that was running before serves it (no restart)
    converged: float  # ... every ready pod (app and PgBouncer) applies it, all replicas ready
    generation: int
    pool_size: int
    max_overflow: int


def mismatch(release: Release, workers: int) -> str | None:
    """What is still off the planner's plan for the current scale (None: nothing)."""
    snapshot = release.get("deployments,pods,configmaps,connectionbudgets")["items"]

    def one(kind: str, name: str) -> dict[str, Any] | None:
        return next(
            (i for i in snapshot if i["kind"] == kind and i["metadata"]["name"] == name), None
        )

    def ready(component: str) -> list[dict[str, Any]]:
        return [
            i
            for i in snapshot
            if i["kind"] == "Pod"
            and is_ready(i)
            and i["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == release.name
            and i["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]

    budget = one("ConnectionBudget", release.budget)
    app = one("Deployment", release.app)
    bouncers = one("Deployment", release.pgbouncer)
    if budget is None or app is None or bouncers is None:
        return "the budget or a Deployment is missing"
    expected = release.expected_plan(budget, app, bouncers)
    consumer = expected.consumers[0]
    plan_cm = one("ConfigMap", f"{release.fullname}-app-plan")
    sizing_cm = one("ConfigMap", f"{release.fullname}-pgbouncer-sizing")
    if plan_cm is None or sizing_cm is None:
        return "no plan or sizing ConfigMap yet"
    plan = planfile.parse(plan_cm["data"]["plan.json"])
    sizing = pgbouncer_ini.parse(sizing_cm["data"]["sizing.ini"])
    if (plan.pool_size, plan.max_overflow, plan.overcommitted) != (
        consumer.pool_size,
        consumer.max_overflow,
        expected.overcommitted,
    ):
        return (
            f"plan file has pool {plan.pool_size}+{plan.max_overflow} "
            f"overcommitted={plan.overcommitted}, planner says "
            f"{consumer.pool_size}+{consumer.max_overflow} "
            f"overcommitted={expected.overcommitted}"
        )
    bouncer = expected.pgbouncer
    want = (bouncer.default_pool_size, bouncer.max_db_connections, bouncer.reserve_pool_size)
    if (sizing.default_pool_size, sizing.max_db_connections, sizing.reserve_pool_size) != want:
        return f"sizing file {sizing}, planner says (default, max_db, reserve) = {want}"

    replicas = app["spec"]["replicas"]
    ready_apps = ready("app")
    if len(ready_apps) != replicas or app.get("status", {}).get("readyReplicas", 0) != replicas:
        return f"app: {len(ready_apps)} ready pods, want {replicas}"
    ready_bouncers = ready("pgbouncer")
    if len(ready_bouncers) != bouncers["spec"]["replicas"]:
        return f"pgbouncer: {len(ready_bouncers)} ready pods, want {bouncers['spec']['replicas']}"
    pools = release.app_pools(ready_apps, workers)
    for pod in ready_apps:
        name = pod["metadata"]["name"]
        seen = pools.get(name, {})
        if len(seen) < workers:
            return f"app pod {name}: {len(seen)} of {workers} workers answered /pool"
        for pid, status in seen.items():
            got = (status["generation"], status["pool_size"], status["max_overflow"])
            if got != (plan.generation, plan.pool_size, plan.max_overflow):
                return (
                    f"app pod {name} worker {pid}: generation/pool/overflow {got}, "
                    f"plan file has {(plan.generation, plan.pool_size, plan.max_overflow)}"
                )
    for pod in ready_bouncers:
        name = pod["metadata"]["name"]
        config = release.pgbouncer_config(name)
        got = tuple(
            int(config[k]) for k in ("default_pool_size", "max_db_connections", "reserve_pool_size")
        )
        if got != want:
            return f"pgbouncer {name}: SHOW CONFIG (default, max_db, reserve) = {got}, want {want}"
    return None


def wait_converged(
    release: Release,
    workers: int,
    since: float,
    timeout: float,
    before: tuple[object, object] | None = None,
) -> Reaction:
    """Poll until `mismatch` is None; times are measured from `since` (time.monotonic()).

    `before`: (plan file, sizing file) before the change; the first time either differs is
    reported as `plan_written`, the first time every app pod that was already running serves
    that plan as `in_place` (pools swapped without a restart)."""
    existing = {p["metadata"]["name"] for p in release.ready_pods("app")}
    written: list[float] = []
    in_place: list[float] = []
    state = {"why": "not checked yet"}

    def probe() -> bool:
        if not written:
            files = (release.plan_file(), release.sizing_file())
            if before is None or files != before:
                written.append(time.monotonic() - since)
        if written and not in_place:
            plan = release.plan_file()
            pods = [p for p in release.ready_pods("app") if p["metadata"]["name"] in existing]
            pools = release.app_pools(pods, workers)
            if plan is not None and all(
                len(pools.get(p["metadata"]["name"], {})) >= workers
                and all(
                    w["generation"] == plan.generation
                    for w in pools[p["metadata"]["name"]].values()
                )
                for p in pods
            ):
                in_place.append(time.monotonic() - since)
        state["why"] = mismatch(release, workers) or ""
        return not state["why"]

    wait_for(
        "the release to converge on the new plan",
        probe,
        timeout=timeout,
        interval=0.3,
        on_timeout=lambda: f"still off: {state['why']}",
    )
    converged = time.monotonic() - since
    plan = release.plan_file()
    assert plan is not None
    return Reaction(
        plan_written=written[0] if written else converged,
        in_place=in_place[0] if in_place else converged,
        converged=converged,
        generation=plan.generation,
        pool_size=plan.pool_size,
        max_overflow=plan.max_overflow,
    )
