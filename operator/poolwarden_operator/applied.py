"""Pure: which consumer pods run the plan generation of their file, as the ``Applied`` condition.

Each ready consumer pod is asked once per pass for its ``/metrics`` (the app library's
``poolwarden.metrics``: under gunicorn's multiprocess directory one
``poolwarden_plan_generation`` sample per live worker, labelled ``pid``). ``Applied`` is True
only when every ready pod's every worker (``workersPerPod`` of them) reports the generation of
its consumer's plan file; otherwise False, naming the lagging pods (at most ``LISTED``).

Nothing here does I/O: ``targets`` says whom to ask, ``worker_generations`` reads an answer,
``condition`` and ``lagging`` judge the answers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

WORKER_GENERATION = "poolwarden_plan_generation"
"""The app library's per-worker gauge (``poolwarden.metrics.PoolMetrics.generation``)."""
STATUS_PORT = "http"
"""The consumer container port the app serves ``/metrics`` on (the chart names it ``http``)."""
LISTED = 10
"""Lagging pods named in the condition's message at most (the rest are counted)."""
CONDITION = "Applied"


@dataclasses.dataclass(frozen=True)
class Target:
    consumer: str
    pod: str
    url: str


@dataclasses.dataclass(frozen=True)
class Report:
    """One pod's answer: the generation of each worker, or None with why it could not be read."""

    consumer: str
    pod: str
    generations: tuple[int, ...] | None
    error: str = ""


def is_ready(pod: dict[str, Any]) -> bool:
    """Running, not terminating, its Ready condition True."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def container_port(pod: dict[str, Any], name: str = STATUS_PORT) -> int | None:
    """The pod's container port called ``name`` (the first container that has one)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def targets(consumer: str, pods: list[dict[str, Any]]) -> list[Target]:
    """The ready pods of one consumer that can be asked, sorted by name."""
    found = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        port = container_port(pod)
        if is_ready(pod) and ip and port:
            host = f"[{ip}]" if ":" in ip else ip
            found.append(Target(consumer, pod["metadata"]["name"], f"http://{host}:{port}/metrics"))
    return sorted(found, key=lambda t: t.pod)


def worker_generations(text: str) -> tuple[int, ...]:
    """The plan generation of each worker in a pod's exposition (one sample per pid)."""
    found = []
    for family in text_string_to_metric_families(text):
        if family.name != WORKER_GENERATION:
            continue
        for sample in family.samples:
            if sample.name == WORKER_GENERATION:
                found.append(int(sample.value))
    return tuple(found)


def lagging(
    expected: dict[str, int], workers: dict[str, int], reports: list[Report]
) -> list[tuple[str, str]]:
    """(pod, why) of every asked pod that does not confirm its consumer's generation, sorted.

    ``expected`` is each consumer's plan-file generation, ``workers`` its workersPerPod.
    """
    found = []
    for r in reports:
        want = expected.get(r.consumer)
        if want is None:
            continue
        if r.generations is None:
            found.append((r.pod, f"unreachable ({r.error or 'no answer'})"))
            continue
        confirmed = sum(1 for g in r.generations if g == want)
        needed = max(1, workers.get(r.consumer, 1))
        if confirmed < needed or len(r.generations) != confirmed:
            seen = ",".join(str(g) for g in sorted(set(r.generations))) or "none"
            found.append(
                (r.pod, f"{confirmed} of {needed} worker(s) on generation {want} (seen: {seen})")
            )
    return sorted(found)


def condition(
    expected: dict[str, int], workers: dict[str, int], reports: list[Report], observed: int
) -> dict[str, Any]:
    """The ``Applied`` condition (without lastTransitionTime, see status.merge_conditions)."""
    behind = lagging(expected, workers, reports)
    asked = len(reports)
    if behind:
        named = "; ".join(f"{pod}: {why}" for pod, why in behind[:LISTED])
        more = f"; and {len(behind) - LISTED} more" if len(behind) > LISTED else ""
        return _condition(
            False, "PodsLagging",
            f"{len(behind)} of {asked} ready consumer pod(s) not on their plan generation: "
            f"{named}{more}",
            observed,
        )  # fmt: skip
    if not asked:
        return _condition(True, "NoReadyPods", "no ready consumer pod to confirm", observed)
    generations = ", ".join(f"{c}={g}" for c, g in sorted(expected.items()))
    return _condition(
        True, "AllPodsApplied",
        f"every worker of the {asked} ready consumer pod(s) runs its plan ({generations})",
        observed,
    )  # fmt: skip


def lagging_pods(expected: dict[str, int], workers: dict[str, int], reports: list[Report]) -> int:
    """How many asked pods lag (for the metrics)."""
    return len(lagging(expected, workers, reports))


def summary(
    expected: dict[str, int], workers: dict[str, int], reports: list[Report]
) -> dict[str, Any]:
    """``status.applied``: ready pods asked, how many lag, the first ``LISTED`` of them."""
    behind = lagging(expected, workers, reports)
    return {
        "readyPods": len(reports),
        "laggingPods": len(behind),
        "lagging": [pod for pod, _ in behind[:LISTED]],
    }


def _condition(value: bool, reason: str, message: str, observed: int) -> dict[str, Any]:
    return {
        "type": CONDITION,
        "status": "True" if value else "False",
        "reason": reason,
        "message": message[:1024],
        "observedGeneration": observed,
    }
