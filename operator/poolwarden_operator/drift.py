"""The periodic drift check: every budget is reconciled again every ``drift_interval`` seconds,
which repairs ConfigMaps edited or deleted by hand and anything a missed event left behind.

A plain task rather than a kopf timer: kopf timers put a finalizer on every budget, which would
block deleting a budget while the operator is not running.
"""

from __future__ import annotations

import asyncio
import logging

from poolwarden_operator import coalesce, config, kube, names

log = logging.getLogger(__name__)


async def loop(client: kube.Kube, coalescer: coalesce.Coalescer, settings: config.Settings) -> None:
    while True:
        await asyncio.sleep(settings.drift_interval)
        try:
            budgets = await client.list_budgets(settings.namespace)
            for budget in budgets:
                key = names.budget_key(settings.namespace, budget["metadata"]["name"])
                await coalescer.request(key)
        except Exception:  # noqa: BLE001 - logged; the next round tries again
            log.exception("drift check failed")
