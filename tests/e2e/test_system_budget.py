"""The database's budget holds under heavy load while PgBouncer's pod count changes.

One release (max_connections 40, reserved 10: a budget of 30 server connections for the
consumers' role) serves the three ordered scenarios of this module. Throughout the module:
- a load of 120 database clients through PgBouncer's Service, each looping
  `SELECT pg_sleep(0.2)` (tests/e2e/incluster_load.py: far more demand than the budget, so
  every PgBouncer fills its server pool to its `max_db_connections`);
- the app's own traffic (tests/e2e/incluster_traffic.py), every answer checked;
- pg_stat_activity for the consumers' role counted every 0.5 s by an administrator's fresh
  login (traffic.Sampler), which is also the proof that administrators can connect.

Scenarios: (a) PgBouncer scaled 2 -> 5 with the operator scaled to 0; (b) a PgBouncer rollout
caused by a `helm upgrade` that changes a PgBouncer setting, old pods draining for
`shutdownDelaySeconds` while new ones start; (c) PgBouncer 5 -> 4, then 4 -> 2. Each one
asserts: no sample above the budget, no failed administrator login (and no blind spot in the
sampling), the app's requests only correct or 503 + Retry-After. Each prints its duration,
the peak against the budget, the load clients' errors by message and the app's outcomes, and
the figures go to .state/measurements/e2e-budget.json.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from convergence import wait_converged
from e2e_cluster import ROOT
from kube import Release, is_ready, wait_for
from releases import explained, make_release, note  # noqa: F401  (fixture)
from traffic import LOAD_INGRESS, Load, LoadWindow, Sampler, Traffic, Window

pytestmark = pytest.mark.e2e

WORKERS = 1
CLIENTS = 120
CONVERGE_TIMEOUT = 240.0
# Seconds the load runs on a new set of PgBouncer pods before the scenario's next step: more
# than the clients' connection lifetime (3 s, so they spread over the new pods), enough for
# every pool to fill.
HOLD = 15.0
# A scenario fails when the sampler saw nothing (no sample, no failed login) for this long.
MAX_SAMPLING_GAP = 10.0
DRAIN = 8  # pgbouncer.shutdownDelaySeconds: terminating pods keep serving this long
VALUES: dict[str, Any] = {
    "pgbouncer": {"replicaCount": 2, "shutdownDelaySeconds": DRAIN},
    "networkPolicy": {"pgbouncerExtraIngressFrom": LOAD_INGRESS},
}
# The setting scenario (b) changes: PgBouncer's server_idle_timeout (rendered into pgbouncer.ini
# from the container's env, so the pod template changes and the Deployment rolls out). Not
# query_wait_timeout: the chart sets that from budget.waitTimeoutSeconds, with the app's pool
# timeout, and rejects it in extraEnv.
ROLLOUT_SETTING = ("server_idle_timeout", "PGBOUNCER_SERVER_IDLE_TIMEOUT", "45")
ALLOWED = {"ok", "unavailable"}  # unavailable: 503 with Retry-After (incluster_traffic.py)
MEASUREMENTS = ROOT / ".state" / "measurements" / "e2e-budget.json"


class PodWatch:
    """PgBouncer pods counted once a second: (epoch, pods, of them terminating)."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.counts: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.release.pods("pgbouncer")
            except (AssertionError, OSError, ValueError):
                pods = None
            if pods is not None:
                terminating = sum(1 for p in pods if p["metadata"].get("deletionTimestamp"))
                self.counts.append((time.time(), len(pods), terminating))
            self._stop.wait(1.0)

    def stop(self) -> tuple[int, int]:
        """(most pods at once, most terminating pods at once)."""
        self._stop.set()
        self._thread.join(timeout=30)
        return (
            max((n for _, n, _ in self.counts), default=0),
            max((t for _, _, t in self.counts), default=0),
        )


@dataclass
class System:
    release: Release
    traffic: Traffic
    sampler: Sampler
    load: Load
    budget: int
    results: dict[str, Any] = field(default_factory=dict)

    def judge(self, scenario: str, start: float, **extra: Any) -> None:
        """Print and record what the scenario's window saw, then assert the budget held."""
        time.sleep(1.0)  # the last samples and reports of the window arrive
        end = time.time()
        samples = [(t, n) for t, n in self.sampler.samples if start <= t < end]
        over = [(round(t, 1), n) for t, n in samples if n > self.budget]
        peak = max((n for _, n in samples), default=0)
        admin = self.sampler.errors_between(start, end)
        gap = self.sampler.longest_gap(start, end)
        load: LoadWindow = self.load.window(start, end)
        app: Window = self.traffic.window(start, end)
        bad = [r for r in app.records if r["outcome"] not in ALLOWED]
        admin_messages: dict[str, int] = {}
        for _, message in admin:
            admin_messages[message] = admin_messages.get(message, 0) + 1
        self.results[scenario] = {
            "seconds": round(end - start, 1),
            "budget": self.budget,
            "peak": peak,
            "samples": len(samples),
            "samples_over_budget": len(over),
            "longest_sampling_gap": round(gap, 1),
            "admin_failures": len(admin),
            "admin_errors": admin_messages,
            "load_queries": load.ok,
            "load_errors": load.errors,
            "load_max_connected": load.max_open,
            "app": app.summary(),
            "app_bad": len(bad),
            **extra,
        }
        note(
            f"budget scenario {scenario}: {end - start:.0f} s; pg_stat_activity peak {peak} of "
            f"{self.budget} ({len(samples)} samples, {len(over)} over the budget, longest gap "
            f"{gap:.1f} s); admin logins failed: {len(admin)}"
            + (f" {json.dumps(admin_messages)}" if admin else "")
            + f"; load: {load.summary()}; app: {app.summary()}"
            + (f"; {json.dumps(extra)}" if extra else "")
        )
        problems = []
        if over:
            problems.append(
                f"{len(over)} samples above the budget of {self.budget} (peak {peak}): {over[:10]}"
            )
        if admin:
            problems.append(f"{len(admin)} administrator logins failed: {admin[:5]}")
        if gap > MAX_SAMPLING_GAP:
            problems.append(f"no pg_stat_activity sample for {gap:.1f} s")
        if not samples:
            problems.append("no pg_stat_activity sample at all")
        if bad:
            problems.append(
                f"app answers other than {sorted(ALLOWED)}: {app.summary()}\n"
                + Window(bad).examples()
            )
        if load.ok == 0:
            problems.append(f"the load answered no query: {load.summary()}")
        assert not problems, f"scenario {scenario}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def system(make_release) -> Iterator[System]:  # noqa: F811
    release = make_release("budget", **VALUES)
    spec = release.budget_object()["spec"]["database"]
    budget = spec["maxConnections"] - spec["reserved"]
    with explained(release):
        wait_converged(release, WORKERS, time.monotonic(), CONVERGE_TIMEOUT)
        sampler = Sampler(release).start()
        traffic = Traffic(release).start()
        load = Load(release, clients=CLIENTS).start()
        system = System(release, traffic, sampler, load, budget)
        # Heavy load: every PgBouncer's server pool full (default_pool_size each; the reserve
        # pool opens only for a client that waited reserve_pool_timeout).
        full = sum(
            int(release.pgbouncer_config(p["metadata"]["name"])["default_pool_size"])
            for p in release.ready_pods("pgbouncer")
        )
        since = time.time()
        wait_for(
            f"the load to fill PgBouncer's server pools ({full} connections)",
            lambda: max(sampler.between(since), default=0) >= min(full, budget),
            timeout=90,
            on_timeout=lambda: f"samples {sampler.between(since)[-20:]}; {load.window().summary()}",
        )
        note(
            f"budget: {budget} server connections; load of {CLIENTS} clients fills "
            f"{full} of them through {len(release.ready_pods('pgbouncer'))} PgBouncer pods"
        )
    yield system
    MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
    MEASUREMENTS.write_text(json.dumps(system.results, indent=2) + "\n")
    sampler.stop()
    load_total = load.stop()
    app_total = traffic.stop()
    note(f"budget module: load {load_total.summary()}; app {app_total.summary()}")


def test_a_pgbouncer_2_to_5_with_the_operator_down(system: System) -> None:
    release = system.release
    with explained(release):
        start = time.time()
        watch = PodWatch(release)
        try:
            release.scale("operator", 0)
            wait_for("the operator pod to be gone", lambda: not release.pods("operator"), 120)
            release.scale("pgbouncer", 5)
            wait_for(
                "5 ready PgBouncer pods",
                lambda: len(release.ready_pods("pgbouncer")) == 5,
                timeout=240,
                interval=0.5,
            )
            time.sleep(HOLD)
        finally:
            release.scale("operator", 1)
        reaction = wait_converged(release, WORKERS, time.monotonic(), CONVERGE_TIMEOUT)
        most, _ = watch.stop()
        system.judge(
            "a (PgBouncer 2 -> 5, operator at 0)",
            start,
            pgbouncer_pods_at_most=most,
            converged_after_operator_back=round(reaction.converged, 1),
        )


def test_b_helm_upgrade_rolls_pgbouncer_out_with_draining_pods(system: System) -> None:
    release = system.release
    setting, env_name, value = ROLLOUT_SETTING
    with explained(release):
        before = {p["metadata"]["uid"] for p in release.pods("pgbouncer")}
        start = time.time()
        watch = PodWatch(release)
        env = [{"name": env_name, "value": value}]
        release.install(pgbouncer={"replicaCount": 5, "extraEnv": env})
        wait_for(
            "the replaced PgBouncer pods to drain and go",
            lambda: (
                all(
                    p["metadata"]["uid"] not in before and is_ready(p)
                    for p in release.pods("pgbouncer")
                )
                and len(release.pods("pgbouncer")) == 5
            ),
            timeout=240,
            interval=0.5,
        )
        for pod in release.ready_pods("pgbouncer"):
            name = pod["metadata"]["name"]
            assert release.pgbouncer_config(name)[setting] == value, (name, setting)
        reaction = wait_converged(release, WORKERS, time.monotonic(), CONVERGE_TIMEOUT)
        time.sleep(HOLD)
        most, terminating = watch.stop()
        assert terminating > 0, "the rollout showed no terminating PgBouncer pod"
        system.judge(
            f"b (helm upgrade {setting} -> {value}: rollout of 5 PgBouncer pods)",
            start,
            pgbouncer_pods_at_most=most,
            terminating_at_most=terminating,
            converged_after=round(reaction.converged, 1),
        )


def test_c_pgbouncer_5_to_4_to_2(system: System) -> None:
    release = system.release
    with explained(release):
        start = time.time()
        watch = PodWatch(release)
        for replicas in (4, 2):
            release.scale("pgbouncer", replicas)
            wait_for(
                f"{replicas} PgBouncer pods, none terminating",
                lambda replicas=replicas: (
                    len(release.pods("pgbouncer")) == replicas
                    and len(release.ready_pods("pgbouncer")) == replicas
                ),
                timeout=240,
                interval=0.5,
            )
            wait_converged(release, WORKERS, time.monotonic(), CONVERGE_TIMEOUT)
            time.sleep(HOLD)
        most, terminating = watch.stop()
        assert terminating > 0, "scaling down showed no terminating PgBouncer pod"
        system.judge(
            "c (PgBouncer 5 -> 4 -> 2)",
            start,
            pgbouncer_pods_at_most=most,
            terminating_at_most=terminating,
        )
