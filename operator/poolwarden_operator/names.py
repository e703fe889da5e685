"""Every name, label, annotation and key the operator writes or reads, from one function each."""

from __future__ import annotations

from poolwarden import pgbouncer_ini, planfile

GROUP = "poolwarden.io"
VERSION = "v1alpha1"
PLURAL = "connectionbudgets"
KIND = "ConnectionBudget"
API_VERSION = f"{GROUP}/{VERSION}"

PLAN_KEY = planfile.FILE_NAME
SIZING_KEY = pgbouncer_ini.FILE_NAME

PLAN_GENERATION_ANNOTATION = "poolwarden.io/plan-generation"
"""Patched onto running pods so the kubelet refreshes their mounted plan right away."""
POOL_SIZE_ANNOTATION = "poolwarden.io/pool-size"
MAX_OVERFLOW_ANNOTATION = "poolwarden.io/max-overflow"
"""Written into a pod template only for consumers with reloadMode ``rollout``."""

BUDGET_LABEL = "poolwarden.io/budget"
"""On ConfigMaps the operator writes; on a Deployment, it joins that budget as a consumer."""

# A Deployment joined by label says how it uses the budget in these annotations.
BUDGET_NAMESPACE_ANNOTATION = "poolwarden.io/budget-namespace"
"""The budget's namespace, when the Deployment is in another (default: its own)."""
CONSUMER_ANNOTATION = "poolwarden.io/consumer"
"""The consumer's name and PgBouncer database alias (default: the Deployment's name)."""
WORKERS_ANNOTATION = "poolwarden.io/workers"
THREADS_ANNOTATION = "poolwarden.io/threads"
WEIGHT_ANNOTATION = "poolwarden.io/weight"
OVERFLOW_ANNOTATION = "poolwarden.io/overflow"
MAX_POOL_ANNOTATION = "poolwarden.io/max-pool-per-worker"
PLAN_CONFIGMAP_ANNOTATION = "poolwarden.io/plan-configmap"
JOIN_ANNOTATIONS = (
    BUDGET_NAMESPACE_ANNOTATION, CONSUMER_ANNOTATION, WORKERS_ANNOTATION, THREADS_ANNOTATION,
    WEIGHT_ANNOTATION, OVERFLOW_ANNOTATION, MAX_POOL_ANNOTATION, PLAN_CONFIGMAP_ANNOTATION,
)  # fmt: skip
MANAGED_BY = "poolwarden-operator"
COMPONENT = "poolwarden-operator"


def budget_key(namespace: str, name: str) -> tuple[str, str]:
    """The key that serializes all work for one ConnectionBudget."""
    return (namespace, name)


def deployment_key(namespace: str, name: str) -> tuple[str, str]:
    """The key under which a Deployment is indexed to the budgets that use it."""
    return (namespace, name)


def plan_configmap_name(budget: str, consumer: str, override: str | None = None) -> str:
    """The ConfigMap holding ``plan.json`` for one consumer (``spec.consumers[].planConfigMap``)."""
    return override or f"{budget}-{consumer}-plan"


def sizing_configmap_name(budget: str, override: str | None = None) -> str:
    """The ConfigMap holding PgBouncer's ``sizing.ini`` (``spec.pgbouncer.sizingConfigMap``)."""
    return override or f"{budget}-pgbouncer-sizing"


def budget_ref(namespace: str, name: str) -> str:
    """How a plan file names its budget: ``<namespace>/<name>``."""
    return f"{namespace}/{name}"


def managed_labels(budget: str) -> dict[str, str]:
    """Labels on every ConfigMap the operator creates."""
    return {"app.kubernetes.io/managed-by": MANAGED_BY, BUDGET_LABEL: budget}


def event_name_prefix(budget: str) -> str:
    """``generateName`` of the Events posted for a budget."""
    return f"{budget}."
