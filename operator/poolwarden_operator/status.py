"""Pure: what a budget's status, conditions and Events say about a plan.

Conditions follow the Kubernetes convention (``type``, ``status``, ``reason``, ``message``,
``observedGeneration``, ``lastTransitionTime`` moving only when ``status`` changes).
"""

from __future__ import annotations

from typing import Any

from poolwarden import planner
from poolwarden_operator import desired


def overcommitted_message(plan: planner.Plan) -> str:
    workers = sum((c.replicas + c.surge) * c.workers for c in plan.consumers)
    who = ", ".join(f"{c.name} ({c.replicas}+{c.surge} pods x {c.workers})" for c in plan.consumers)
    return (
        f"{workers} workers ({who}) need at least one connection each but PgBouncer holds "
        f"{plan.capacity}: raise spec.database.maxConnections to at least "
        f"{planner.needed_max_connections(plan)}, or lower the consumers' replicas or workersPerPod"
    )


def applied(
    spec: dict[str, Any],
    generation: int | None,
    observed: int,
    plan: planner.Plan,
    plan_files: list[desired.File],
    previous: dict[str, Any],
    now: str,
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
                else f"{plan.client_total} of {plan.capacity} connections planned",
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
        "pgbouncer": {
            "replicas": plan.pgbouncer.replicas,
            "surge": plan.pgbouncer.surge,
            "defaultPoolSize": plan.pgbouncer.default_pool_size,
            "maxDbConnections": plan.pgbouncer.max_db_connections,
            "reservePoolSize": plan.pgbouncer.reserve_pool_size,
            "maxClientConn": plan.pgbouncer.max_client_conn,
        },
        "consumers": [
            {
                "name": c.name,
                "replicas": c.replicas,
                "surge": c.surge,
                "workersPerPod": c.workers,
                "poolSize": c.pool_size,
                "maxOverflow": c.max_overflow,
                "perPod": c.per_pod,
            }
            for c in plan.consumers
        ],
        "files": {
            f.configmap: {"digest": f.digest, "generation": f.generation} for f in plan_files
        },
        "explanation": plan.explanation,
        "conditions": conditions,
    }


def invalid(
    error: Exception, reason: str, observed: int, previous: dict[str, Any], now: str
) -> dict[str, Any]:
    """The budget's status when it cannot be planned; the last applied plan stays in place."""
    conditions = merge_conditions(
        previous.get("conditions") or [],
        [_condition("Ready", False, reason, str(error), observed)],
        now,
    )
    return {"observedGeneration": observed, "state": "Invalid", "conditions": conditions}


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
        f"{c.name} pool_size {c.pool_size} max_overflow {c.max_overflow} "
        f"({c.replicas} pods, {c.per_pod}/pod)"
        for c in plan.consumers
    )
    b = plan.pgbouncer
    bouncer = (
        f"pgbouncer x{b.replicas} default_pool_size {b.default_pool_size} "
        f"max_db_connections {b.max_db_connections}"
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
