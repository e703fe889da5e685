"""The whole system on a real cluster under steady traffic: scale, operator restart, failures.

One release (its own namespace) serves the ordered tests of this module while one in-cluster
traffic generator writes and reads through the app for the whole module, checking every
answer, and PostgreSQL's pg_stat_activity is sampled throughout. Scale-reaction times are
printed and written to .state/measurements/e2e-scale-reaction.json; the last test draws the
run (server connections per consumer, the budget, every scale and fault) into
.state/e2e/scale.png (tests/e2e/picture.py) and prints its path.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import picture
import pytest
from convergence import Reaction, wait_converged
from e2e_cluster import ROOT
from kube import Release, is_ready, wait_for
from releases import explained, make_release, note  # noqa: F401  (fixture)
from traffic import Sampler, Traffic, UserLoad, UserWindow, Window

pytestmark = pytest.mark.e2e

WORKERS = 1
CONVERGE_TIMEOUT = 240.0
MEASUREMENTS = ROOT / ".state" / "measurements" / "e2e-scale-reaction.json"
TRAFFIC_LOG = ROOT / ".state" / "e2e" / "traffic.jsonl"
PICTURE = ROOT / ".state" / "e2e" / "scale.png"


@dataclass
class System:
    release: Release
    traffic: Traffic
    sampler: Sampler
    budget: int
    started: float = field(default_factory=time.time)
    reactions: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    """(epoch seconds, label) of every scale and fault, for the picture."""

    def mark(self, label: str) -> None:
        self.events.append((time.time(), label))

    def assert_within_budget(self) -> None:
        peak = self.sampler.peak()
        assert peak <= self.budget, (
            f"pg_stat_activity reached {peak} server connections, budget is {self.budget}"
        )

    def assert_no_failed_requests(self, since: float) -> int:
        window = self.traffic.window(since)
        assert window.ok > 0, f"no successful request since the step began: {window.summary()}"
        assert not window.failed, (
            f"failed or wrong requests: {window.summary()}\n{window.examples()}"
        )
        return len(window.records)


@pytest.fixture(scope="module")
def system(make_release) -> Iterator[System]:  # noqa: F811
    release = make_release("pw", postgresql={"persistence": {"enabled": True, "size": "1Gi"}})
    spec = release.budget_object()["spec"]["database"]
    with explained(release):
        sampler = Sampler(release).start()
        traffic = Traffic(release).start()
    system = System(release, traffic, sampler, spec["maxConnections"] - spec["reserved"])
    yield system
    sampler.stop()
    records = traffic.stop().records
    # Every request the generator made, for a look after a failure.
    TRAFFIC_LOG.parent.mkdir(parents=True, exist_ok=True)
    TRAFFIC_LOG.write_text("".join(json.dumps(r) + "\n" for r in records))
    if system.reactions:
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        MEASUREMENTS.write_text(json.dumps(system.reactions, indent=2) + "\n")


def scale_converged(system: System, component: str, replicas: int) -> Reaction:
    """Scale; wait until every ready pod applies the new plan; check nothing restarted."""
    release = system.release
    before_pods = {c: release.restart_counts(c) for c in ("app", "pgbouncer")}
    before_files = (release.plan_file(), release.sizing_file())
    since = time.monotonic()
    system.mark(f"{component} -> {replicas}")
    release.scale(component, replicas)
    reaction = wait_converged(release, WORKERS, since, CONVERGE_TIMEOUT, before=before_files)
    for comp, counts in before_pods.items():
        now = release.restart_counts(comp)
        for uid, restarts in now.items():
            if uid in counts:
                assert restarts == counts[uid], (
                    f"a {comp} pod restarted while scaling {component} to {replicas}"
                )
    return reaction


def scale_and_measure(system: System, component: str, replicas: int) -> Reaction:
    """`scale_converged`, then: no request of the module's traffic failed, within budget."""
    wall = time.time()
    reaction = scale_converged(system, component, replicas)
    requests = system.assert_no_failed_requests(wall)
    system.assert_within_budget()
    key = f"{component} -> {replicas}"
    system.reactions[key] = {**asdict(reaction), "requests_checked": requests}
    note(
        f"scale {key}: plan written after {reaction.plan_written:.1f} s, running app pods "
        f"swapped in place after {reaction.in_place:.1f} s, every ready "
        f"pod on generation {reaction.generation} (pool {reaction.pool_size}+"
        f"{reaction.max_overflow}) after {reaction.converged:.1f} s; {requests} requests, "
        f"0 failed; pg_stat_activity peak {system.sampler.peak()} of {system.budget}"
    )
    return reaction


def test_install_plans_and_serves(system: System) -> None:
    release = system.release
    with explained(release):
        reaction = wait_converged(release, WORKERS, time.monotonic(), CONVERGE_TIMEOUT)
        assert reaction.generation >= 1
        result = release.helm("test", release.name, "--timeout", "3m")
        assert "Succeeded" in result.stdout, result.stdout
        system.assert_no_failed_requests(system.started)


def test_scale_app_and_pgbouncer_without_restarts(system: System) -> None:
    with explained(system.release):
        for component, replicas in (("app", 6), ("app", 1), ("pgbouncer", 3)):
            scale_and_measure(system, component, replicas)
        system.assert_no_failed_requests(system.started)


def test_operator_restart_mid_scale_converges(system: System) -> None:
    release = system.release
    with explained(release):
        operator_pods = release.pods("operator")
        assert len(operator_pods) == 1
        old = operator_pods[0]["metadata"]["uid"]
        wall = time.time()
        since = time.monotonic()
        system.mark("app -> 3, operator pod deleted, app -> 4")
        release.scale("app", 3)
        release.kubectl("delete", "pod", operator_pods[0]["metadata"]["name"], "--wait=false")
        release.scale("app", 4)
        wait_for(
            "a new operator pod to be ready",
            lambda: [
                p for p in release.pods("operator") if p["metadata"]["uid"] != old and is_ready(p)
            ],
            timeout=180,
        )
        reaction = wait_converged(release, WORKERS, since, CONVERGE_TIMEOUT)
        assert reaction.generation > 0
        system.reactions["app -> 3 -> 4 with the operator restarted"] = asdict(reaction)
        note(f"operator restarted mid-scale: converged on app=4 after {reaction.converged:.1f} s")
        system.assert_no_failed_requests(wall)
        system.assert_within_budget()


# What a client may see while a pod is replaced: only correct answers or a fast 503 +
# Retry-After. The app's readiness probe leaves out the live database check, so a database
# outage keeps every app pod in the Service answering 503 rather than refusing connections.
# Never a refused connection, a wrong answer, a hang or a reset.
ALLOWED_DURING = {
    "pgbouncer": {"ok", "unavailable"},
    "postgresql": {"ok", "unavailable"},
}


def test_pgbouncer_then_postgresql_pod_deleted_under_load(system: System) -> None:
    release = system.release
    with explained(release):
        for component in ("pgbouncer", "postgresql"):
            name = release.ready_pods(component)[0]["metadata"]["name"]
            old_uid = release.get("pod", name)["metadata"]["uid"]
            kind = "deployment" if component == "pgbouncer" else "statefulset"
            want = release.get(kind, f"{release.fullname}-{component}")["spec"]["replicas"]
            deleted = time.time()
            system.mark(f"{component} pod deleted")
            release.kubectl("delete", "pod", name, "--wait=false")

            def recovered(
                component: str = component,
                old_uid: str = old_uid,
                want: int = want,
                deleted: float = deleted,
            ) -> bool:
                replaced = all(p["metadata"]["uid"] != old_uid for p in release.pods(component))
                ready = len(release.ready_pods(component)) == want
                # recovered: 10 requests in a row answered correctly after the pod came back
                tail = system.traffic.window(deleted).records[-10:]
                return (
                    replaced
                    and ready
                    and len(tail) == 10
                    and all(r["outcome"] == "ok" for r in tail)
                )

            wait_for(f"recovery after deleting {name}", recovered, timeout=300, interval=2)
            took = time.time() - deleted
            window = system.traffic.window(deleted)
            unavailable = window.by_outcome("unavailable")
            refused = window.by_outcome("refused")
            latencies = sorted(r["t1"] - r["t0"] for r in unavailable)
            note(
                f"deleted {name}: recovered after {took:.0f} s; {window.summary()}; "
                f"503 answers: {len(unavailable)}"
                + (
                    f" (median {statistics.median(latencies):.2f} s, slowest {latencies[-1]:.2f} s)"
                    if latencies
                    else ""
                )
                + f"; connections refused: {len(refused)}"
            )
            system.reactions[f"delete {component} pod"] = {
                "recovered_after": round(took, 1),
                "requests": len(window.records),
                "unavailable_503": len(unavailable),
                "slowest_503": latencies[-1] if latencies else 0.0,
                "refused": len(refused),
            }
            bad = [r for r in window.records if r["outcome"] not in ALLOWED_DURING[component]]
            assert not bad, (
                f"after deleting {name}: answers other than {sorted(ALLOWED_DURING[component])}"
                f": {window.summary()}\n{Window(bad).examples()}"
            )
        system.assert_within_budget()

        traffic = system.traffic.stop()
        confirmed = system.traffic.confirmed_rows()
        assert confirmed, "no write was confirmed"
        answer = release.psql(
            f"SELECT id, name FROM items WHERE name LIKE '{system.traffic.run_id}-%';"
        )
        rows = {
            int(line.split("|", 1)[0]): line.split("|", 1)[1]
            for line in answer.splitlines()
            if "|" in line
        }
        missing = {i: n for i, n in confirmed.items() if rows.get(i) != n}
        assert not missing, (
            f"{len(missing)} confirmed rows missing after the failures: {list(missing.items())[:5]}"
        )
        note(
            f"traffic total {traffic.summary()}; all {len(confirmed)} confirmed "
            f"writes present; pg_stat_activity peak {system.sampler.peak()} of {system.budget}"
        )


# Users who each need a transaction holding a server connection for USER_SLEEP seconds, far
# more of them than the budget: every server connection of the budget could be busy, and
# the rest of the users wait (in PgBouncer's queue, within its wait timeout) rather than fail.
# Twice the budget: 100 users (3.3x) made the one serving pod's queue wait past the 10 s
# timeout while five new pods started on 2 CPUs (docs/e2e.md), a CPU limit of the machine.
USERS = 60
USER_SLEEP = 1.0
PLATEAU = 20.0
# Transactions at once (pg_stat_activity, the consumers' role, state active) at the peak of a
# plateau, as a fraction of the budget: a pool that leaves the budget idle under this load
# fails here.
USEFUL = {6: 0.8, 1: 0.5}
USER_MEASUREMENTS = ROOT / ".state" / "measurements" / "e2e-user-load.json"


def test_scale_app_under_user_load(system: System) -> None:
    """App 1 -> 6 -> 1 under USERS (60) users of 1-second transactions: no request fails (a 503 is a
    failure: the queue belongs in PgBouncer within its wait timeout), pg_stat_activity never
    above the budget, and the pools keep the budget busy at 6 pods and at 1."""
    release = system.release
    budget = system.budget
    with explained(release):
        # The other tests leave PgBouncer at 3 and the app at 4; alone, this test starts there.
        if release.get("deployment", release.pgbouncer)["spec"]["replicas"] != 3:
            scale_converged(system, "pgbouncer", 3)
        scale_converged(system, "app", 1)
        system.mark(f"{USERS} users start")
        load = UserLoad(release, users=USERS, sleep=USER_SLEEP, max_seconds=1200).start()
        began = time.time()
        phases: list[tuple[str, int | None, float, float]] = []
        reactions: dict[str, Any] = {}
        try:
            start = time.time()
            time.sleep(PLATEAU)
            phases.append(("1 pod", 1, start, time.time()))
            for replicas, name in ((6, "6 pods"), (1, "1 pod again")):
                start = time.time()
                reaction = scale_converged(system, "app", replicas)
                reactions[f"app -> {replicas}"] = asdict(reaction)
                phases.append((f"scaling to {replicas}", None, start, time.time()))
                start = time.time()
                time.sleep(PLATEAU)
                phases.append((name, replicas, start, time.time()))
            time.sleep(2.0)  # the last reports and samples of the plateau arrive
        finally:
            whole = load.stop()
            system.mark("users stop")
        ended = time.time()

        figures: dict[str, Any] = {
            "users": USERS,
            "sleep_seconds": USER_SLEEP,
            "budget": budget,
            "phases": {},
            "reactions": reactions,
        }
        short: list[str] = []
        for name, replicas, start, end in phases:
            window = load_window(whole.reports, start, end)
            active = system.sampler.active_between(start, end)
            peak_active = max(active, default=0)
            figures["phases"][name] = {
                "seconds": round(end - start, 1),
                "ok": window.ok,
                "unavailable_503": window.unavailable,
                "wrong": window.wrong,
                "errors": window.errors,
                "p50_max": window.latency("p50"),
                "p99_max": window.latency("p99"),
                "latency_max": window.latency("max"),
                "pg_connections_peak": system.sampler.peak(start, end),
                "pg_active_peak": peak_active,
                "pg_active_median": statistics.median(active) if active else 0,
                "pg_active_peak_of_budget": round(peak_active / budget, 2),
                "samples": len(active),
            }
            note(
                f"user load, {name}: {window.summary()}; transactions at once (pg_stat_activity "
                f"active) peak {peak_active} of {budget} "
                f"({peak_active / budget:.2f}), median "
                f"{figures['phases'][name]['pg_active_median']}; connections peak "
                f"{system.sampler.peak(start, end)}"
            )
            if replicas is not None:
                short.append(f"{name}: {peak_active}/{budget}")
        peak = system.sampler.peak(began, ended)
        figures["whole"] = {
            "ok": whole.ok,
            "unavailable_503": whole.unavailable,
            "wrong": whole.wrong,
            "errors": whole.errors,
            "pg_connections_peak": peak,
        }
        USER_MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        USER_MEASUREMENTS.write_text(json.dumps(figures, indent=2) + "\n")
        note(
            f"user load 1 -> 6 -> 1, whole run: {whole.summary()}; pg_stat_activity peak "
            f"{peak} of {budget}; active peaks {', '.join(short)}"
        )

        assert whole.ok > 0, f"no request answered: {whole.summary()}"
        assert whole.failed == 0, (
            f"requests failed under {USERS} users: {whole.summary()}\n{whole.examples()}"
        )
        assert peak <= budget, f"pg_stat_activity reached {peak} server connections of {budget}"
        for name, replicas, _, _ in phases:
            if replicas is None:
                continue
            got = figures["phases"][name]["pg_active_peak"]
            assert got >= USEFUL[replicas] * budget, (
                f"{name}: at most {got} transactions at once of a budget of {budget} under "
                f"{USERS} users (want >= {USEFUL[replicas]:.0%} of it): the pools leave the "
                f"budget idle; {figures['phases'][name]}"
            )


def load_window(reports: list[dict[str, Any]], start: float, end: float) -> UserWindow:
    return UserWindow([r for r in reports if start <= r["t"] < end])


def test_picture_of_the_run(system: System) -> None:
    """Last: the run's PNG, server connections per consumer against the budget with every
    scale and fault marked (drawn even when an earlier test failed; only this test fails when
    it cannot be drawn)."""
    release = system.release
    consumers = release.budget_object()["spec"]["consumers"]
    deployments = {c["deployment"]: c["name"] for c in consumers}
    samples = picture.by_consumer(list(system.sampler.by_pod), deployments)
    path = picture.draw(
        PICTURE, samples, system.budget, list(system.events),
        title=f"e2e scale run: server connections of the consumers' role (budget {system.budget})",
    )  # fmt: skip
    note(f"picture of the run: {path} ({len(samples)} samples, {len(system.events)} events)")
    assert path.stat().st_size > 0
    names = {c["name"] for c in consumers}
    assert any(counts.get(name) for _, counts in samples for name in names), (
        "no sample counted a connection of a consumer's pods (application_name <pod>/<pid>): "
        f"the picture shows only {sorted({n for _, c in samples for n in c})}"
    )
