"""Pure: the e2e scale run as a picture (PNG): server connections per consumer over time, the
budget line, and the run's scale and fault events marked.

`by_consumer` groups pg_stat_activity samples counted per pod (the pod is the first part of a
connection's application_name, ``<pod>/<pid>``) into consumers by their Deployments; `draw`
writes the PNG with matplotlib's Agg renderer (no display, no pyplot state). Nothing here talks
to a cluster: tests/e2e/test_system_scale.py gathers the samples and events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from poolwarden import ledgerview

OTHER = "other"
"""Connections of the consumers' role whose application_name names no consumer's pod."""
SIZE = (10.0, 4.8)
"""Inches; at `DPI` the PNG is 1000 x 480 pixels."""
DPI = 100

Sample = tuple[float, Mapping[str, int]]
"""(epoch seconds, name -> server connections)."""


def pod_counts(field: str) -> dict[str, int]:
    """``pod:n,pod:n`` (the sampler's per-pod column, tests/e2e/traffic.py) -> {pod: n}; a
    part that does not parse is skipped (the sampler's totals never depend on it)."""
    counts: dict[str, int] = {}
    for part in filter(None, field.split(",")):
        pod, sep, n = part.rpartition(":")
        if sep and n.isdigit():
            counts[pod] = counts.get(pod, 0) + int(n)
    return counts


def by_consumer(samples: Sequence[Sample], deployments: Mapping[str, str]) -> list[Sample]:
    """Per-pod samples -> per-consumer samples; ``deployments`` maps a Deployment to its
    consumer; a pod of no listed Deployment (or no application_name) counts as `OTHER`."""
    grouped = []
    for at, pods in samples:
        counts: dict[str, int] = {}
        for pod, n in pods.items():
            name = deployments.get(ledgerview.pod_deployment(pod), OTHER) if pod else OTHER
            counts[name] = counts.get(name, 0) + n
        grouped.append((at, counts))
    return grouped


def draw(
    path: Path,
    samples: Sequence[Sample],
    budget: int,
    events: Sequence[tuple[float, str]] = (),
    title: str = "server connections per consumer",
) -> Path:
    """Write the PNG: stacked server connections per consumer (seconds from the first sample),
    the budget as a dashed line, each event a dotted vertical line with its label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples = sorted(samples, key=lambda s: s[0])
    start = samples[0][0] if samples else min((t for t, _ in events), default=0.0)
    names = sorted({n for _, counts in samples for n in counts}, key=lambda n: (n == OTHER, n))
    times = [t - start for t, _ in samples]
    figure = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if names:
        axes.stackplot(
            times, [[counts.get(n, 0) for _, counts in samples] for n in names], labels=names,
            alpha=0.8, step="post",
        )  # fmt: skip
    else:
        axes.text(0.5, 0.5, "no samples", transform=axes.transAxes, ha="center")
    axes.axhline(budget, color="black", linestyle="--", linewidth=1.2, label=f"budget {budget}")
    top = max([budget, *(sum(c.values()) for _, c in samples)]) * 1.25 + 1
    axes.set_ylim(0, top)
    for at, label in sorted(events):
        x = at - start
        axes.axvline(x, color="grey", linestyle=":", linewidth=1)
        axes.text(x, top * 0.98, f" {label}", rotation=90, va="top", ha="left", fontsize=7)
    axes.set_xlabel("seconds")
    axes.set_ylabel("server connections (pg_stat_activity)")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.subplots_adjust(left=0.07, right=0.85, bottom=0.11, top=0.92)  # fixed: no warnings
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path
