"""The in-use loop: every ``ledger_interval`` seconds, each budget's ready PgBouncer pods'
exporters are read once (``ask``), summed per consumer alias (``bouncers``, ``inuse``: pure),
set as the operator's in-use metrics, and written to ``status.inUse`` at most every
``ledger_status_interval`` seconds and only when the numbers changed.

It works from what the last pass of each budget left (``update``): its PgBouncer Deployment and
planned consumers. A status patch starts no pass: the budget handlers act on ``spec`` changes
and on deletion only (``handlers.on_budget_spec``, ``on_budget_event``).

A plain task like ``drift``: a round is bounded (one LIST of pods and one GET of the PgBouncer
Deployment per budget, the pods asked with ``ask.TIMEOUT``); a failing budget is logged and
never stops the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from typing import Any

from poolwarden_operator import ask, bouncers, config, inuse, kube, metrics

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclasses.dataclass
class _Budget:
    pgbouncer: str
    consumers: list[str]
    window: inuse.Window
    patched: dict[str, Any] | None = None
    patched_at: float | None = None


class Sampler:
    def __init__(self, client: kube.Kube, ledger: metrics.Ledger, settings: config.Settings):
        self._client, self._ledger, self._settings = client, ledger, settings
        self._budgets: dict[Key, _Budget] = {}

    def update(self, key: Key, after: kube.JSON | None) -> None:
        """What a pass left: the budget (spec and status), or None when it is gone. A budget
        that cannot be planned (state Invalid) has no planned consumers: it is not sampled."""
        planned = after is not None and after["status"].get("state") not in (None, "Invalid")
        if after is None or not planned:
            self._budgets.pop(key, None)
            self._ledger.set_in_use(key, [])  # no stale in-use series for it
            return
        consumers = [str(c["name"]) for c in after["status"].get("consumers") or []]
        bouncer = str(after["spec"]["pgbouncer"]["deployment"])
        known = self._budgets.get(key)
        if known is None:
            known = _Budget(bouncer, consumers, inuse.Window(self._settings.ledger_window))
            known.patched = after["status"].get("inUse")
            self._budgets[key] = known
        known.pgbouncer, known.consumers = bouncer, consumers

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.ledger_interval)
            await self.round()

    async def round(self) -> None:
        """One sample of every known budget, concurrently; failures stay per budget."""
        keys = sorted(self._budgets)
        results = await asyncio.gather(*(self.sample(k) for k in keys), return_exceptions=True)
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, Exception):
                log.warning("in-use sample of %s/%s failed: %s", *key, result)

    async def sample(self, key: Key) -> dict[str, Any] | None:
        """Sample one budget; returns its ``status.inUse`` (None: no PgBouncer pod answered)."""
        budget = self._budgets.get(key)
        if budget is None:
            return None
        namespace, name = key
        deployment = await self._client.get_deployment(namespace, budget.pgbouncer)
        selector = kube.label_selector(deployment) if deployment is not None else ""
        pods = await self._client.list_pods(namespace, selector) if selector else []
        targets, _ = bouncers.targets(pods)
        reports = await ask.bouncer_reports(targets)
        answered = [r for r in reports if r.scrape is not None and r.scrape.up]
        if key not in self._budgets:
            return None  # deleted meanwhile
        if not answered:
            self._ledger.set_in_use(key, [])
            return None
        now = inuse.counts(budget.consumers, bouncers.pools(answered))
        at = time.monotonic()
        budget.window.add(at, now)
        self._ledger.set_in_use(
            key, metrics.in_use_samples(namespace, name, now, budget.window.peaks())
        )
        found = inuse.status(budget.window, now, _now(), len(answered))
        if inuse.due(found, budget.patched, at, budget.patched_at,
                     self._settings.ledger_status_interval):  # fmt: skip
            await self._client.patch_budget_status(namespace, name, {"inUse": found})
            budget.patched, budget.patched_at = found, at
        return found


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
