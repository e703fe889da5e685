"""Pure: what each consumer really uses, from every ready PgBouncer pod's SHOW POOLS.

A consumer is its PgBouncer alias (``bouncers.pools``: summed over the pods). ``Window`` keeps
the samples of the last ``seconds`` (at most ``MAX_SAMPLES``) for the peaks; ``status`` is the
bounded ``status.inUse`` (at most ``applied.LISTED`` consumers, sorted by name); ``due`` says
whether a status patch may be sent (at most every ``interval`` seconds and only when the
numbers changed, so the status is no per-second feed: the metrics are).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from poolwarden_operator import applied, bouncers

MAX_SAMPLES = 720
"""Samples kept per budget at most, whatever the window and interval (memory stays bounded)."""


@dataclasses.dataclass(frozen=True)
class Counts:
    """One consumer's server connections and clients, summed over the PgBouncer pods."""

    server_active: int = 0
    server_idle: int = 0
    clients_active: int = 0
    clients_waiting: int = 0

    @property
    def server(self) -> int:
        return self.server_active + self.server_idle


def counts(consumers: list[str], pools: dict[str, bouncers.Pool]) -> dict[str, Counts]:
    """Each planned consumer's numbers (0 when its alias has no pool yet); other aliases (the
    database's own entry, the admin console) are not consumers and are left out."""
    found = {}
    for name in sorted(set(consumers)):
        pool = pools.get(name, bouncers.Pool())
        found[name] = Counts(pool.sv_active, pool.server_idle, pool.cl_active, pool.cl_waiting)
    return found


class Window:
    """The samples of the last ``seconds`` for one budget, oldest first."""

    def __init__(self, seconds: float, limit: int = MAX_SAMPLES) -> None:
        self.seconds = seconds
        self._samples: collections.deque[tuple[float, dict[str, Counts]]] = collections.deque(
            maxlen=max(1, limit)
        )

    def add(self, at: float, sample: dict[str, Counts]) -> None:
        """A sample taken at ``at`` (monotonic seconds); older ones leave the window."""
        self._samples.append((at, dict(sample)))
        while self._samples and self._samples[0][0] < at - self.seconds:
            self._samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def peaks(self) -> dict[str, tuple[int, int]]:
        """consumer -> (peak server connections, peak clients waiting) over the window."""
        found: dict[str, tuple[int, int]] = {}
        for _, sample in self._samples:
            for name, c in sample.items():
                server, waiting = found.get(name, (0, 0))
                found[name] = (max(server, c.server), max(waiting, c.clients_waiting))
        return found


def status(
    window: Window, now: dict[str, Counts], sampled_at: str, pods: int
) -> dict[str, Any]:
    """``status.inUse`` from the latest sample and the window's peaks (bounded)."""
    peaks = window.peaks()
    consumers = []
    for name in sorted(now)[: applied.LISTED]:
        c = now[name]
        server, waiting = peaks.get(name, (c.server, c.clients_waiting))
        consumers.append({
            "name": name,
            "serverActive": c.server_active,
            "serverIdle": c.server_idle,
            "clientsActive": c.clients_active,
            "clientsWaiting": c.clients_waiting,
            "peakServer": max(server, c.server),
            "peakWaiting": max(waiting, c.clients_waiting),
        })  # fmt: skip
    return {
        "sampledAt": sampled_at,
        "windowSeconds": int(window.seconds),
        "pgbouncerPods": pods,
        "serverActive": sum(c.server_active for c in now.values()),
        "serverIdle": sum(c.server_idle for c in now.values()),
        "clientsWaiting": sum(c.clients_waiting for c in now.values()),
        "consumers": consumers,
    }


def changed(new: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    """The numbers differ (the time of the sample alone is no change)."""
    if not previous:
        return True
    strip = ("sampledAt",)
    return {k: v for k, v in new.items() if k not in strip} != {
        k: v for k, v in previous.items() if k not in strip
    }


def due(
    new: dict[str, Any], previous: dict[str, Any] | None, now: float, last: float | None,
    interval: float,
) -> bool:  # fmt: skip
    """A status patch may go out: the numbers changed and ``interval`` seconds passed since the
    last patch (``last`` None: none yet)."""
    if not changed(new, previous):
        return False
    return last is None or now - last >= interval
