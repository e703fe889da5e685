"""Is the whole release on the plan the planner gives for its current scale, and since when?

`mismatch(release)` returns None when: the plan and sizing ConfigMaps hold what the planner
computes (here, independently of the operator) for the Deployments' current replicas (the
sizing's global limits and each consumer's alias with its server pool); the app Deployment has
all its replicas ready and every worker of every ready app pod reports that plan's generation
and sizes on /pool; every ready PgBouncer's SHOW CONFIG shows the sizing's limits and its SHOW
DATABASES each consumer's alias with that pool_size. Otherwise it returns what is still off, so
a timeout says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kube import Release, is_ready, wait_for

from poolwarden import pgbouncer_ini, planfile

# The sizing include's global limits: what the planner decides (max_client_conn: the chart's
# value, passed through), in the file and in every PgBouncer's SHOW CONFIG.
LIMITS = pgbouncer_ini.KEYS


@dataclass
class Reaction:
    """Seconds from the scale command until ..."""

    plan_written: float  # ... the plan or sizing ConfigMap holds the new plan
    in_place: float  # ... every app pod that was running before serves it (no restart)
    converged: float  # ... every ready pod (app and PgBouncer) applies it, all replicas ready
    generation: int
    pool_size: int
    max_overflow: int
    server_pool: int = 0  # the app's alias pool_size in each PgBouncer pod


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
    want = {key: getattr(bouncer, key) for key in LIMITS}
    got = {key: getattr(sizing, key) for key in LIMITS}
    if got != want:
        return f"sizing file limits {got}, planner says {want}"
    want_aliases = {c.name: c.server_pool for c in expected.consumers}
    got_aliases = {d.name: d.pool_size for d in sizing.databases}
    if got_aliases != want_aliases:
        return f"sizing file aliases (pool_size) {got_aliases}, planner says {want_aliases}"

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
        got = {key: int(config[key]) for key in LIMITS}
        if got != want:
            return f"pgbouncer {name}: SHOW CONFIG {got}, want {want}"
        databases = release.pgbouncer_databases(name)
        got_aliases = {
            alias: int(databases[alias]["pool_size"])
            for alias in want_aliases
            if alias in databases
        }
        if got_aliases != want_aliases:
            return f"pgbouncer {name}: SHOW DATABASES pool_size {got_aliases}, want {want_aliases}"
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
    sizing = release.sizing_file()
    assert plan is not None and sizing is not None
    consumer = release.budget_object()["spec"]["consumers"][0]["name"]
    return Reaction(
        plan_written=written[0] if written else converged,
        in_place=in_place[0] if in_place else converged,
        converged=converged,
        generation=plan.generation,
        pool_size=plan.pool_size,
        max_overflow=plan.max_overflow,
        server_pool=next((d.pool_size for d in sizing.databases if d.name == consumer), 0),
    )
