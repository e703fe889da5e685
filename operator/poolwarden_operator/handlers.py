"""kopf registrations only: each handler gathers its inputs and asks for a reconcile.

All work for one ConnectionBudget goes through ``memo.coalescer`` (one pass at a time per
budget; bursts collapse into one pass that reads the latest state).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import kopf

from poolwarden_operator import (
    coalesce,
    config,
    desired,
    drift,
    kube,
    metrics,
    names,
    reconcile,
    retry,
    sampler,
)

BUDGETS = (names.GROUP, names.VERSION, names.PLURAL)
HPAS = ("autoscaling", "v2", "horizontalpodautoscalers")
_UNSEEN = object()


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    if "settings" not in memo:  # run by __main__, which read them once; else (kopf run) here
        memo.settings = config.Settings.from_env()
    settings.posting.level = logging.WARNING
    # One namespace, resources known up front: no cluster-wide CRD/namespace scanning, so the
    # operator needs no ClusterRole at all.
    settings.scanning.disabled = True
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    memo.kube = kube.Kube.connect(os.environ.get("POD_NAME") or socket.gethostname())
    memo.ledger = metrics.Ledger()
    memo.metrics = None
    memo.sampler = sampler.Sampler(memo.kube, memo.ledger, memo.settings)
    if memo.settings.metrics_port:
        memo.metrics = metrics.serve(
            memo.ledger, memo.settings.metrics_host, memo.settings.metrics_port
        )

    async def work(key: Any) -> None:
        after = await reconcile.reconcile(
            memo.kube, *key, watched=memo.settings.consumer_namespaces
        )
        found = None if after is None else metrics.samples(*key, after["spec"], after["status"])
        memo.ledger.set(key, found)
        memo.sampler.update(key, after)
        # An Invalid budget's consumer files stay as they were and Applied is not re-judged.
        planned = after is not None and after["status"].get("state") != "Invalid"
        memo.rechecks.after_pass(key, planned and metrics.lagging(after["status"]))

    memo.coalescer = coalesce.Coalescer(work)
    memo.retrier = retry.Retrier(memo.coalescer)
    memo.rechecks = retry.Rechecks(memo.retrier, memo.settings.drift_interval)
    memo.seen = {}  # Deployment -> the fields the plan depends on, recorded after a good pass
    memo.members = {}  # Deployment joined by label -> its budget key, recorded after a good pass
    memo.pods = {}  # PgBouncer pod -> terminating?, recorded after a good pass
    memo.hpas = {}  # HPA -> (target Deployment, maxReplicas), recorded after a good pass
    memo.databases = {}  # budget -> its database identity, recorded after a good pass
    memo.drift = asyncio.create_task(drift.loop(memo.kube, memo.retrier, memo.settings))
    memo.sampling = asyncio.create_task(memo.sampler.loop())


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.drift.cancel()
    memo.sampling.cancel()
    await asyncio.gather(memo.drift, memo.sampling, return_exceptions=True)
    await memo.rechecks.close()
    await memo.retrier.close()
    await memo.coalescer.close()
    if memo.metrics is not None:
        await asyncio.to_thread(memo.metrics.shutdown)
    memo.kube.close()


def _home(namespace: str, memo: kopf.Memo, **_: Any) -> bool:
    """Budgets are the operator's own in its namespace only; in the other namespaces it watches
    (POOLWARDEN_CONSUMER_NAMESPACES) it looks at Deployments and pods, never at budgets."""
    return bool(namespace == memo.settings.namespace)


@kopf.index(*BUDGETS, when=_home)
def budgets_by_deployment(
    namespace: str, name: str, spec: dict[str, Any], **_: Any
) -> dict[Any, str]:
    return {names.deployment_key(namespace, d): name for d in desired.deployment_names(spec)}


@kopf.index(*BUDGETS, when=_home)
def budgets_by_pgbouncer(
    namespace: str, name: str, spec: dict[str, Any], **_: Any
) -> dict[Any, str]:
    return {names.deployment_key(namespace, spec["pgbouncer"]["deployment"]): name}


@kopf.index(*BUDGETS, when=_home)
def budgets_by_sized_deployment(
    namespace: str, name: str, spec: dict[str, Any], **_: Any
) -> dict[Any, str]:
    """Consumer Deployments planned for their HPA's maxReplicas -> the budget."""
    return {names.deployment_key(namespace, d): name for d in desired.sized_deployments(spec)}


@kopf.index(*BUDGETS, when=_home)
def budgets_by_database(
    namespace: str, name: str, spec: dict[str, Any], **_: Any
) -> dict[Any, str]:
    identity = desired.database_identity(namespace, spec)
    return {} if identity is None else {(namespace, identity): name}


@kopf.on.resume(*BUDGETS, when=_home)
@kopf.on.create(*BUDGETS, when=_home)
@kopf.on.update(*BUDGETS, field="spec", when=_home)
async def on_budget_spec(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await _request(memo, namespace, name)


@kopf.on.event(*BUDGETS, when=_home)
async def on_budget_event(
    type: str, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
    budgets_by_database: kopf.Index, **_: Any,
) -> None:  # fmt: skip
    """Budgets for the same database as this one (before or after a change) re-check overlaps;
    a deleted budget gets one more pass, which finds it gone and drops its metrics."""
    key = names.budget_key(namespace, name)
    if type == "DELETED":
        await memo.retrier.request(key)
    identity = None if type == "DELETED" else desired.database_identity(namespace, body["spec"])
    old = memo.databases.get(key, _UNSEEN)
    if old == identity:
        return
    others: set[str] = set()
    for found in (old, identity):
        if found is not None and found is not _UNSEEN:
            others |= set(budgets_by_database.get((namespace, found), []))
    others.discard(name)
    if await _request_all(memo, namespace, others):
        memo.databases[key] = identity


@kopf.on.event("apps", "v1", "deployments")
async def on_deployment_event(
    type: str, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
    budgets_by_deployment: kopf.Index, **_: Any,
) -> None:  # fmt: skip
    """A Deployment a budget names, or one that joins (or leaves) a budget by label."""
    key = names.deployment_key(namespace, name)
    budgets = {names.budget_key(namespace, b) for b in budgets_by_deployment.get(key, [])}
    joined = None if type == "DELETED" else desired.joined_budget(body)
    before = memo.members.get(key)
    for found in (joined, before):
        if found is not None and found[0] == memo.settings.namespace:
            budgets.add(names.budget_key(*found))  # budgets elsewhere are not this operator's
    if not budgets:
        return
    fields = (
        None if type == "DELETED" else (desired.watched_fields(body), desired.join_fields(body))
    )
    if memo.seen.get(key, _UNSEEN) == fields:
        return  # a status or template change: the plan does not depend on it
    # Recorded only after every pass succeeded: a failed pass is retried in the background,
    # and an identical event after it is not mistaken for one already handled.
    if await _request_keys(memo, budgets):
        memo.seen[key] = fields
        if joined is None:
            memo.members.pop(key, None)
        else:
            memo.members[key] = joined


def _pgbouncer_pod(
    body: kopf.Body, namespace: str, budgets_by_pgbouncer: kopf.Index, **_: Any
) -> bool:
    """A pod of a budget's PgBouncer Deployment. Other pods never reach the handler: a scale of
    a large consumer (and its pods' plan annotations) is an event per pod, and kopf would run
    and log the handler for each one on the loop that runs the pass."""
    deployment = desired.owning_deployment(body)
    return deployment is not None and bool(
        budgets_by_pgbouncer.get(names.deployment_key(namespace, deployment))
    )


@kopf.on.event("v1", "pods", when=_pgbouncer_pod)
async def on_pod_event(
    type: str, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
    budgets_by_pgbouncer: kopf.Index, **_: Any,
) -> None:  # fmt: skip
    """PgBouncer pods appearing, starting to terminate, and disappearing change the plan."""
    deployment = desired.owning_deployment(body)
    if deployment is None:
        return
    budgets = set(budgets_by_pgbouncer.get(names.deployment_key(namespace, deployment), []))
    if not budgets:
        return
    key = (namespace, name)
    state = None if type == "DELETED" else desired.is_terminating(body)
    if memo.pods.get(key, _UNSEEN) == state:
        return  # a status change of a pod already counted
    if await _request_all(memo, namespace, budgets):
        if state is None:
            memo.pods.pop(key, None)
        else:
            memo.pods[key] = state


@kopf.on.event(*HPAS)
async def on_hpa_event(
    type: str, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
    budgets_by_sized_deployment: kopf.Index, **_: Any,
) -> None:  # fmt: skip
    """An HPA's maxReplicas (or target) changing re-plans the consumers sized for it."""
    key = (namespace, name)
    fields = (None, None) if type == "DELETED" else desired.hpa_fields(body)
    old = memo.hpas.get(key, (None, None))
    if old == fields:
        return  # a status change (currentReplicas, conditions): the plan does not depend on it
    budgets: set[str] = set()
    for target in {old[0], fields[0]} - {None}:
        budgets |= set(budgets_by_sized_deployment.get(names.deployment_key(namespace, target), []))
    if await _request_all(memo, namespace, budgets):
        if type == "DELETED":
            memo.hpas.pop(key, None)
        else:
            memo.hpas[key] = fields


async def _request_all(memo: kopf.Memo, namespace: str, budgets: set[str]) -> bool:
    """A pass for each budget; False when any failed (it is being retried in the background)."""
    return await _request_keys(memo, {names.budget_key(namespace, b) for b in budgets})


async def _request_keys(memo: kopf.Memo, keys: set[tuple[str, str]]) -> bool:
    results = [await memo.retrier.request(key) for key in sorted(keys)]
    return all(results)


async def _request(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        await memo.coalescer.request(names.budget_key(namespace, name))
    except kube.ApiException as exc:
        raise kopf.TemporaryError(
            f"Kubernetes API error, retrying: {exc.status} {exc.reason}", delay=2
        ) from exc
