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
    namespace: str, name: str, spec: dict[str, Any], plan: planner.Plan, status: dict[str, Any],
    written: int = 0,
) -> tuple[int, list[File]]:
    """The plan files and the budget's new planGeneration.

    A file keeps the generation it was last written with while its content stays the same, so
    its bytes are identical and nothing is rewritten or reloaded; any changed file bumps the
    budget's generation and carries the new number. `written` is the highest generation found
    in the ConfigMaps: after a crash between writing a file and recording it in the status,
    the next plan still gets a higher number than any file the pods may already have.
    """
    previous = status.get("files") or {}
    current = max(int(status.get("planGeneration") or 0), written)
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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
