"""The periodic drift check: every budget is reconciled again every ``drift_interval`` seconds,
which repairs ConfigMaps edited or deleted by hand and anything a missed event left behind.

Each budget is checked on its own: one that fails (its ConfigMap immutable, an API error) is
logged and handed to the retrier, and never stops the repair of the others.

A plain task rather than a kopf timer: kopf timers put a finalizer on every budget, which would
block deleting a budget while the operator is not running.
"""

from __future__ import annotations

import asyncio
import logging

from poolwarden_operator import config, kube, names, retry

log = logging.getLogger(__name__)


async def loop(client: kube.Kube, retrier: retry.Retrier, settings: config.Settings) -> None:
    while True:
        await asyncio.sleep(settings.drift_interval)
        await check(client, retrier, settings.namespace)


async def check(client: kube.Kube, retrier: retry.Retrier, namespace: str) -> None:
    """One round: a pass for every budget, concurrently; failures stay per budget."""
    try:
        budgets = await client.list_budgets(namespace)
    except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
        log.warning("drift check could not list budgets: %s", exc)
        return
    keys = [names.budget_key(namespace, b["metadata"]["name"]) for b in budgets]
    await asyncio.gather(*(retrier.request(key) for key in keys))
