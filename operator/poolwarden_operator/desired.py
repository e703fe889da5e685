"""Pure: from a ConnectionBudget and its Deployments to planner inputs, and from a plan to the
ConfigMaps, pod-template annotations, status and Event text the operator should write.

Every function takes plain dicts (the objects as the API serves them) and returns plain data;
nothing here talks to the API, so all of it is tested without a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from poolwarden import pgbouncer_ini, planfile, planner
from poolwarden_operator import names

DEFAULT_REPLICAS = 1  # what the API server defaults a Deployment's spec.replicas to


class SpecError(ValueError):
    """The budget cannot be planned as it stands; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class File:
    """One ConfigMap the operator owns, with the single key it writes."""

    configmap: str
    key: str
    text: str
    digest: str
    generation: int
    consumer: str | None  # None for PgBouncer's sizing include


def deployment_names(spec: dict[str, Any]) -> list[str]:
    """Every Deployment a budget depends on, PgBouncer's first."""
    found = [spec["pgbouncer"]["deployment"]]
    found += [c["deployment"] for c in spec.get("consumers", [])]
    return found


def surge_of(deployment: dict[str, Any]) -> int:
    spec = deployment.get("spec", {})
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type", "RollingUpdate")
    max_surge = (strategy.get("rollingUpdate") or {}).get("maxSurge")
    return planner.resolve_surge(replicas_of(deployment), kind, max_surge)


def replicas_of(deployment: dict[str, Any]) -> int:
    replicas = deployment.get("spec", {}).get("replicas")
    return DEFAULT_REPLICAS if replicas is None else int(replicas)


def watched_fields(deployment: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of a Deployment the plan depends on; other changes are ignored."""
    spec = deployment.get("spec", {})
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    return (spec.get("replicas"), strategy.get("type"), str(rolling.get("maxSurge")))


def planner_inputs(
    spec: dict[str, Any], deployments: dict[str, dict[str, Any] | None]
) -> tuple[planner.Budget, planner.PgBouncer, list[planner.Consumer]]:
    """Planner inputs; a missing consumer Deployment counts as scaled to zero."""
    database = spec["database"]
    bouncer_spec = spec["pgbouncer"]
    bouncer = deployments.get(bouncer_spec["deployment"])
    if bouncer is None:
        raise SpecError(
            "PgBouncerMissing",
            f"PgBouncer Deployment {bouncer_spec['deployment']!r} not found: create it or fix "
            "spec.pgbouncer.deployment",
        )
    consumers = []
    for item in spec["consumers"]:
        found = deployments.get(item["deployment"])
        replicas = 0 if found is None else replicas_of(found)
        consumers.append(
            planner.Consumer(
                name=item["name"],
                replicas=replicas,
                workers=item.get("workersPerPod", 1),
                weight=item.get("weight", 1),
                surge=0 if found is None else surge_of(found),
                overflow=item.get("overflow", "none"),
            )
        )
    return (
        planner.Budget(database["maxConnections"], database.get("reserved", 0)),
        planner.PgBouncer(
            replicas_of(bouncer),
            surge_of(bouncer),
            bouncer_spec.get("maxClientConn", planner.DEFAULT_MAX_CLIENT_CONN),
        ),
        consumers,
    )


def files(
    namespace: str, name: str, spec: dict[str, Any], plan: planner.Plan, status: dict[str, Any]
) -> tuple[int, list[File]]:
    """The plan files and the budget's new planGeneration.

    A file keeps the generation it was last written with while its content stays the same, so
    its bytes are identical and nothing is rewritten or reloaded; any changed file bumps the
    budget's generation and carries the new number.
    """
    previous = status.get("files") or {}
    current = int(status.get("planGeneration") or 0)
    drafts: list[tuple[str, str, str | None, Any]] = []
    ref = names.budget_ref(namespace, name)
    for item in spec["consumers"]:
        cm = names.plan_configmap_name(name, item["name"], item.get("planConfigMap"))
        drafts.append((cm, names.PLAN_KEY, item["name"], plan.consumer(item["name"])))
    sizing_cm = names.sizing_configmap_name(name, spec["pgbouncer"].get("sizingConfigMap"))
    drafts.append((sizing_cm, names.SIZING_KEY, None, plan.pgbouncer))

    def text(consumer: str | None, part: Any, generation: int) -> str:
        if consumer is None:
            sizing = pgbouncer_ini.Sizing(
                default_pool_size=part.default_pool_size,
                max_db_connections=part.max_db_connections,
                reserve_pool_size=part.reserve_pool_size,
                max_client_conn=part.max_client_conn,
            )
            return pgbouncer_ini.render(sizing, budget=ref, generation=generation)
        return planfile.render(
            planfile.PoolPlan(
                pool_size=part.pool_size,
                max_overflow=part.max_overflow,
                generation=generation,
                budget=ref,
                consumer=consumer,
                overcommitted=plan.overcommitted,
                explanation=consumer_explanation(ref, plan, part),
            )
        )

    digests = {cm: _digest(text(consumer, part, 0)) for cm, _, consumer, part in drafts}
    changed = any((previous.get(cm) or {}).get("digest") != digests[cm] for cm in digests)
    generation = current + 1 if changed else max(current, 1)
    result = []
    for cm, key, consumer, part in drafts:
        kept = previous.get(cm) or {}
        file_generation = (
            kept.get("generation", generation) if kept.get("digest") == digests[cm] else generation
        )
        result.append(
            File(
                cm,
                key,
                text(consumer, part, file_generation),
                digests[cm],
                file_generation,
                consumer,
            )
        )
    return generation, result


def consumer_explanation(ref: str, plan: planner.Plan, part: planner.ConsumerPlan) -> str:
    """A consumer's own paragraph: it depends only on this consumer's numbers and the budget."""
    text = (
        f"Each of the {part.workers} worker(s) per pod of {part.name} may hold {part.share} "
        f"connection(s) to PgBouncer (pool_size {part.pool_size} + max_overflow "
        f"{part.max_overflow}), {part.per_pod} per pod, weight {part.weight}; the budget {ref} "
        f"holds {plan.capacity} server connection(s) shared by weight; "
        "kubectl get connectionbudget shows the whole plan."
    )
    if plan.overcommitted:
        text += " The budget is overcommitted: every worker gets 1 and PgBouncer queues the rest."
    return text


def template_annotations(part: planner.ConsumerPlan) -> dict[str, str]:
    """For reloadMode ``rollout``: the pool size in the pod template (a rolling restart)."""
    return {
        names.POOL_SIZE_ANNOTATION: str(part.pool_size),
        names.MAX_OVERFLOW_ANNOTATION: str(part.max_overflow),
    }


def overcommitted_message(plan: planner.Plan) -> str:
    workers = sum((c.replicas + c.surge) * c.workers for c in plan.consumers)
    who = ", ".join(f"{c.name} ({c.replicas}+{c.surge} pods x {c.workers})" for c in plan.consumers)
    return (
        f"{workers} workers ({who}) need at least one connection each but PgBouncer holds "
        f"{plan.capacity}: raise spec.database.maxConnections to at least "
        f"{planner.needed_max_connections(plan)}, or lower the consumers' replicas or workersPerPod"
    )


def status(
    spec: dict[str, Any],
    generation: int | None,
    observed: int,
    plan: planner.Plan,
    plan_files: list[File],
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


def invalid_status(
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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
