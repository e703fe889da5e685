"""Pure: what a budget's status, conditions and Events say about a plan.

Conditions follow the Kubernetes convention (``type``, ``status``, ``reason``, ``message``,
``observedGeneration``, ``lastTransitionTime`` moving only when ``status`` changes).
"""

from __future__ import annotations

from typing import Any

from poolwarden import planner
from poolwarden_operator import desired


def overcommitted_message(plan: planner.Plan) -> str:
    """What is short (the planner's server side, client side or both) and what to change, in
    the budget's own field names."""
    active = [c for c in plan.consumers if c.replicas > 0]
    parts = []
    if plan.server_short:
        parts.append(
            f"server side: {len(active)} active consumer(s) need one server connection each per "
            f"PgBouncer pod but each of the {plan.pgbouncer_pods} pod(s) gets max_db_connections "
            f"{plan.pgbouncer.max_db_connections}: raise spec.database.maxConnections to at least "
            f"{planner.needed_max_connections(plan)}, or lower the PgBouncer replicas"
        )
    if plan.client_short:
        wanted = sum((c.replicas + c.surge) * c.workers for c in plan.consumers)
        who = ", ".join(
            f"{c.name} ({c.replicas}+{c.surge} pods x {c.workers})" for c in plan.consumers
        )
        parts.append(
            f"client side: {wanted} workers ({who}) need at least one client connection each but "
            f"PgBouncer accepts {plan.client_limit} (max_client_conn "
            f"{plan.pgbouncer.max_client_conn} x {max(1, plan.pgbouncer.replicas)} replica(s)): "
            f"raise spec.pgbouncer.maxClientConn to at least "
            f"{planner.needed_max_client_conn(plan)}, or lower the consumers' replicas or "
            "workersPerPod"
        )
    if not parts:
        parts.append(plan.explanation)
    return "Overcommitted, " + "; ".join(parts)


def utilization(plan: planner.Plan) -> str:
    """``status.utilization``: the plan's utilization with two decimals, e.g. ``0.91``."""
    return f"{plan.utilization:.2f}"


def applied(
    spec: dict[str, Any],
    generation: int | None,
    observed: int,
    plan: planner.Plan,
    plan_files: list[desired.File],
    previous: dict[str, Any],
    now: str,
    pods: desired.Pods | None = None,
) -> dict[str, Any]:
    """The budget's status for a plan that was applied."""
    over = plan.overcommitted
    conditions = merge_conditions(
        previous.get("conditions") or [],
        [
            _condition(
                "Ready", True, "PlanApplied", f"plan generation {generation} applied", observed
            ),
            _condition(
                "Overcommitted",
                over,
                "BudgetTooSmall" if over else "WithinBudget",
                overcommitted_message(plan)
                if over
                else (
                    f"utilization {utilization(plan)}: server pools "
                    + ", ".join(f"{c.name}={c.server_pool}" for c in plan.consumers)
                    + f" per PgBouncer pod; {plan.client_total} of {plan.client_limit} client "
                    "connections planned"
                ),
                observed,
            ),
        ],
        now,
    )
    return {
        "observedGeneration": observed,
        "planGeneration": generation,
        "state": "Overcommitted" if over else "Ready",
        "budget": plan.budget,
        "replicas": sum(c.replicas for c in plan.consumers),
        "poolPerWorker": " ".join(
            f"{c.name}={c.pool_size}+{c.max_overflow}" for c in plan.consumers
        ),
        "serverTotal": plan.server_total,
        "clientTotal": plan.client_total,
        "clientLimit": plan.client_limit,
        "utilization": utilization(plan),
        "pgbouncer": pgbouncer_status(plan.pgbouncer, plan.pgbouncer_pods, pods, previous),
        "consumers": [
            {
                "name": c.name,
                "replicas": c.replicas,
                "surge": c.surge,
                "workersPerPod": c.workers,
                "threadsPerWorker": c.threads,
                "cap": c.cap,
                "serverPool": c.server_pool,
                "poolSize": c.pool_size,
                "maxOverflow": c.max_overflow,
                "perPod": c.per_pod,
            }
            for c in plan.consumers
        ],
        "files": {f.ref: {"digest": f.digest, "generation": f.generation} for f in plan_files},
        "explanation": plan.explanation,
        "conditions": conditions,
    }


def invalid(
    error: Exception,
    reason: str,
    observed: int,
    previous: dict[str, Any],
    now: str,
    safe: planner.SafeSizing | None = None,
    generation: int | None = None,
    sizing: desired.File | None = None,
    pods: desired.Pods | None = None,
) -> dict[str, Any]:
    """The budget's status when it cannot be planned.

    PgBouncer got the fail-safe sizing (``safe``), never the last plan's larger limits; the
    consumers' plan files stay as they are (PgBouncer caps what they can reach).
    """
    conditions = merge_conditions(
        previous.get("conditions") or [],
        [_condition("Ready", False, reason, invalid_message(error, safe), observed)],
        now,
    )
    result: dict[str, Any] = {
        "observedGeneration": observed,
        "state": "Invalid",
        "conditions": conditions,
    }
    if safe is not None and sizing is not None:
        b = safe.pgbouncer
        result["planGeneration"] = generation
        result["pgbouncer"] = pgbouncer_status(b, None, pods, previous)
        files = dict(previous.get("files") or {})
        files[sizing.configmap] = {"digest": sizing.digest, "generation": sizing.generation}
        result["files"] = files
    return result


def pgbouncer_status(
    b: planner.PgBouncerPlan, count: int | None, pods: desired.Pods | None, previous: dict[str, Any]
) -> dict[str, Any]:
    """``status.pgbouncer``: the limits, and what terminating pods may still hold.

    ``previousMaxDbConnections`` is the limit before the current one (a pod that starts
    terminating may not have read the current file yet); ``terminatingHeld`` the limit each
    terminating pod may keep until it is gone.
    """
    before = previous.get("pgbouncer") or {}
    last = before.get("maxDbConnections")
    result: dict[str, Any] = {
        "replicas": b.replicas,
        "surge": b.surge,
        "defaultPoolSize": b.default_pool_size,
        "maxDbConnections": b.max_db_connections,
        "reservePoolSize": b.reserve_pool_size,
        "maxClientConn": b.max_client_conn,
        "maxUserConnections": b.max_user_connections,
        "previousMaxDbConnections": (
            last if last is not None and last != b.max_db_connections
            else before.get("previousMaxDbConnections", b.max_db_connections)
        ),
        "terminatingHeld": dict(pods.held) if pods is not None else {},
    }  # fmt: skip
    if count is not None:
        result["pods"] = count
    return result


def invalid_message(error: Exception, safe: planner.SafeSizing | None) -> str:
    """What is wrong, what to change, and what PgBouncer was given meanwhile."""
    if safe is None:
        return str(error)
    b = safe.pgbouncer
    given = f"PgBouncer was given max_db_connections {b.max_db_connections} per pod"
    if safe.fits:
        return f"{error}. Meanwhile {given}: {safe.message}"
    return f"{error}. Meanwhile {given}, which does not fit: {safe.message}"


def overlap_condition(others: list[str], observed: int) -> dict[str, Any]:
    """``Overlapping``: other budgets of this namespace for the same database and role."""
    if not others:
        return _condition(
            "Overlapping", False, "NoOverlap",
            "no other ConnectionBudget in this namespace names the same database and role",
            observed,
        )  # fmt: skip
    return _condition(
        "Overlapping", True, "SameDatabase",
        f"ConnectionBudget(s) {', '.join(others)} name the same spec.database host, port, name "
        "and role: each plans the whole budget, so together they can exceed it; keep one budget "
        "per database and role, or give each its own role and split maxConnections",
        observed,
    )  # fmt: skip


def discovery_condition(found: desired.Discovery, observed: int) -> dict[str, Any]:
    """``Discovery``: every Deployment labelled for this budget joined (True), or which did
    not and what to fix (False, reason ``InvalidAnnotation``)."""
    joined = ", ".join(f"{c['name']} ({c['deployment']})" for c in found.consumers)
    if found.problems:
        return _condition(
            "Discovery", False, "InvalidAnnotation",
            f"{len(found.problems)} labelled Deployment(s) not planned: "
            + "; ".join(found.problems)[:900]
            + (f". Joined: {joined}" if joined else ""),
            observed,
        )  # fmt: skip
    return _condition(
        "Discovery", True, "Joined",
        f"joined by label: {joined}" if joined else "no Deployment joins this budget by label",
        observed,
    )  # fmt: skip


def discovered(found: desired.Discovery) -> list[dict[str, Any]]:
    """``status.discovered``: the consumers joined by label, by name and Deployment."""
    return [
        {
            "name": c["name"],
            "deployment": c["deployment"].rpartition("/")[2],
            "namespace": c.get("namespace", ""),
        }
        for c in found.consumers
    ]


def merge_conditions(
    previous: list[dict[str, Any]], new: list[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Conditions by type; lastTransitionTime moves only when a condition's status changes."""
    by_type = {c["type"]: dict(c) for c in previous}
    for condition in new:
        old = by_type.get(condition["type"])
        keep = (
            old is not None
            and old.get("status") == condition["status"]
            and old.get("lastTransitionTime")
        )
        by_type[condition["type"]] = {
            **condition,
            "lastTransitionTime": old["lastTransitionTime"] if keep else now,
        }
    return [by_type[key] for key in sorted(by_type)]


def plan_event(plan: planner.Plan, generation: int) -> tuple[str, str, str]:
    """(type, reason, message) of the Event that announces a new plan."""
    shares = ", ".join(
        f"{c.name} server_pool {c.server_pool} pool_size {c.pool_size} max_overflow "
        f"{c.max_overflow} ({c.replicas} pods, {c.per_pod}/pod)"
        for c in plan.consumers
    )
    b = plan.pgbouncer
    bouncer = (
        f"pgbouncer x{b.replicas} max_user_connections {b.max_user_connections} "
        f"max_db_connections {b.max_db_connections}; utilization {utilization(plan)}"
    )
    if plan.overcommitted:
        return (
            "Warning",
            "Overcommitted",
            f"plan generation {generation}: {overcommitted_message(plan)}",
        )
    return "Normal", "PlanUpdated", f"plan generation {generation}: {shares}; {bouncer}"


def _condition(kind: str, value: bool, reason: str, message: str, observed: int) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if value else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": observed,
    }
