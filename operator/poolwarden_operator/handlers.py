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

from poolwarden_operator import coalesce, config, desired, drift, kube, names, reconcile

BUDGETS = (names.GROUP, names.VERSION, names.PLURAL)


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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

    async def work(key: Any) -> None:
        await reconcile.reconcile(memo.kube, *key)

    memo.coalescer = coalesce.Coalescer(work)
    memo.seen = {}
    memo.drift = asyncio.create_task(drift.loop(memo.kube, memo.coalescer, memo.settings))


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.drift.cancel()
    await asyncio.gather(memo.drift, return_exceptions=True)
    await memo.coalescer.close()
    memo.kube.close()


@kopf.index(*BUDGETS)
def budgets_by_deployment(
    namespace: str, name: str, spec: dict[str, Any], **_: Any
) -> dict[Any, str]:
    return {names.deployment_key(namespace, d): name for d in desired.deployment_names(spec)}


@kopf.on.resume(*BUDGETS)
@kopf.on.create(*BUDGETS)
@kopf.on.update(*BUDGETS, field="spec")
async def on_budget_spec(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await _request(memo, namespace, name)


@kopf.on.event("apps", "v1", "deployments")
async def on_deployment_event(
    type: str, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
    budgets_by_deployment: kopf.Index, **_: Any,
) -> None:  # fmt: skip
    key = names.deployment_key(namespace, name)
    budgets = list(budgets_by_deployment.get(key, []))
    if not budgets:
        return
    fields = None if type == "DELETED" else desired.watched_fields(body)
    if key in memo.seen and memo.seen[key] == fields:
        return  # a status or template change: the plan does not depend on it
    memo.seen[key] = fields
    for budget in sorted(set(budgets)):
        await _request(memo, namespace, budget)


async def _request(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        await memo.coalescer.request(names.budget_key(namespace, name))
    except kube.ApiException as exc:
        raise kopf.TemporaryError(
            f"Kubernetes API error, retrying: {exc.status} {exc.reason}", delay=2
        ) from exc
