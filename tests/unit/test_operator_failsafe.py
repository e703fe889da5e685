"""The operator's fail-safe half: pod counting, safe sizing, overlaps, retries, per-budget drift."""

from __future__ import annotations

import asyncio

import pytest

from poolwarden import pgbouncer_ini, planner
from poolwarden_operator import desired, retry, status
from poolwarden_operator.coalesce import Coalescer

DATABASE = {"host": "pg.shop.svc", "port": 5432, "name": "shop"}
SPEC = {
    "database": {"maxConnections": 100, "reserved": 10, **DATABASE},
    "pgbouncer": {"deployment": "pgbouncer"},
    "consumers": [{"name": "app", "deployment": "app", "workersPerPod": 2}],
}


def pod(name, rs="pgbouncer-5d9f", template_hash="5d9f", terminating=False):
    meta = {
        "name": name,
        "labels": {"pod-template-hash": template_hash} if template_hash else {},
        "ownerReferences": [{"kind": "ReplicaSet", "name": rs}] if rs else [],
    }
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def deployment(replicas, max_surge=1):
    return {
        "metadata": {"name": "pgbouncer"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "pgbouncer"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": max_surge}},
        },
    }


def test_the_owning_deployment_is_the_replicaset_minus_the_template_hash():
    assert desired.owning_deployment(pod("a")) == "pgbouncer"
    assert desired.owning_deployment(pod("a", rs="my-pg-bouncer-77", template_hash="77")) == (
        "my-pg-bouncer"
    )
    assert desired.owning_deployment(pod("a", template_hash=None)) is None
    assert desired.owning_deployment(pod("a", rs=None)) is None
    assert desired.owning_deployment(pod("a", rs="other-1", template_hash="2")) is None


def test_terminating_pods_are_counted_and_other_owners_are_not():
    pods = [
        pod("a"), pod("b"), pod("c", terminating=True),
        pod("d", rs="pgbouncer-x-5d9f"),  # another Deployment whose name starts the same way
        pod("e", rs="app-5d9f"),
    ]  # fmt: skip
    counted = desired.count_pods(pods, "pgbouncer")
    assert counted == desired.Pods(live=2, terminating=1, terminating_names=("c",))
    inputs = desired.planner_inputs(SPEC, {"pgbouncer": deployment(2), "app": None}, counted)
    assert inputs[1].pods == 3 + 1  # max(2 live, 2 + 1 surge) + 1 terminating


def test_a_terminating_pod_keeps_the_larger_of_the_last_two_limits_until_it_is_gone():
    counted = desired.Pods(live=2, terminating=2, terminating_names=("old", "new"))
    previous = {
        "pgbouncer": {
            "maxDbConnections": 22,
            "previousMaxDbConnections": 30,
            "terminatingHeld": {"old": 45},
        }
    }
    held = desired.with_held(counted, previous)
    assert dict(held.held) == {"old": 45, "new": 30}
    inputs = desired.planner_inputs(SPEC, {"pgbouncer": deployment(2), "app": None}, held)
    plan = planner.plan(*inputs)
    # 3 other pods share what the two terminating pods may keep: 3 x 5 + 45 + 30 = 90.
    assert plan.pgbouncer.max_db_connections == 5 and plan.server_total == 90
    applied = status.applied(SPEC, 3, 1, plan, [], previous, "now", held)
    assert applied["pgbouncer"]["terminatingHeld"] == {"old": 45, "new": 30}
    assert applied["pgbouncer"]["previousMaxDbConnections"] == 22
    assert desired.with_held(desired.Pods(live=2), {}).held == ()


@pytest.mark.parametrize(
    ("spec_change", "replicas", "pods", "limit", "fits"),
    [
        ({}, 2, desired.Pods(2, 2), 90 // 5, True),  # fine, just the normal sizing
        ({"database": {"maxConnections": 100, "reserved": 10}}, 94, desired.Pods(94), 1, False),
        ({"database": {"maxConnections": 12, "reserved": 2}}, 4, desired.Pods(4), 2, True),
        ({"consumers": [{"name": "app"}]}, 2, desired.Pods(2), 30, True),  # consumer error
        ({"database": {"maxConnections": 10, "reserved": 10}}, 1, desired.Pods(1), 1, False),
    ],
)
def test_safe_sizing_never_depends_on_the_consumers(spec_change, replicas, pods, limit, fits):
    spec = {**SPEC, **spec_change}
    safe = desired.safe_pgbouncer(spec, {"pgbouncer": deployment(replicas)}, pods)
    assert safe.pgbouncer.max_db_connections == limit
    assert safe.fits is fits


def test_safe_sizing_file_gets_a_new_generation_and_the_status_says_what_to_change():
    previous = {
        "planGeneration": 4,
        "files": {
            "budget-pgbouncer-sizing": {"digest": "old", "generation": 4},
            "budget-app-plan": {"digest": "kept", "generation": 3},
        },
        "pgbouncer": {"maxDbConnections": 30},
    }
    safe = desired.safe_pgbouncer(SPEC, {"pgbouncer": deployment(94)}, desired.Pods(94))
    generation, sizing = desired.sizing_file("ns", "budget", SPEC, safe.pgbouncer, previous, 6)
    assert generation == 7 and sizing.generation == 7
    parsed = pgbouncer_ini.parse(sizing.text)
    assert parsed.max_db_connections == 1
    assert pgbouncer_ini.generation(sizing.text) == 7
    error = ValueError("pgbouncer.replicas: 95 PgBouncer pods ... raise maxConnections")
    result = status.invalid(error, "InvalidBudget", 2, previous, "now", safe, generation, sizing)
    assert result["state"] == "Invalid"
    assert result["pgbouncer"]["maxDbConnections"] == 1
    assert result["files"]["budget-app-plan"] == {"digest": "kept", "generation": 3}
    assert result["files"]["budget-pgbouncer-sizing"]["generation"] == 7
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert "max_db_connections 1 per pod, which does not fit" in ready["message"]
    assert "PostgreSQL's connection limit" in ready["message"]


@pytest.mark.parametrize(
    ("replicas", "consumers", "each"),
    [
        (2, ["app", "worker"], 15),  # 90 // 3 pods = 30 per pod, split evenly
        (94, ["app", "worker", "cron"], 1),  # 1 per pod: every alias still gets 1
        (2, ["app", "worker", "cron"], 10),
    ],
)
def test_the_fail_safe_sizing_keeps_every_consumers_alias(replicas, consumers, each):
    spec = {**SPEC, "consumers": [{"name": n, "deployment": n} for n in consumers]}
    safe = desired.safe_pgbouncer(spec, {"pgbouncer": deployment(replicas)}, desired.Pods())
    _, sizing = desired.sizing_file("ns", "budget", spec, safe.pgbouncer, {})
    parsed = pgbouncer_ini.parse(sizing.text)
    assert {d.name: d.pool_size for d in parsed.databases} == dict.fromkeys(consumers, each)
    assert {(d.host, d.port, d.dbname) for d in parsed.databases} == {("pg.shop.svc", 5432, "shop")}
    # max_user_connections caps the sum over the aliases at the safe per-pod limit.
    assert (
        parsed.max_user_connections
        == parsed.max_db_connections
        == safe.pgbouncer.max_db_connections
    )


def test_the_fail_safe_sizing_never_raises_on_what_cannot_be_an_alias():
    # Stored before the CRD's rules: no host, a name PgBouncer cannot take as a database.
    spec = {
        "database": {"maxConnections": 100, "reserved": 10},
        "pgbouncer": {"deployment": "pgbouncer"},
        "consumers": [{"name": "App!", "deployment": "app"}],
    }
    safe = desired.safe_pgbouncer(spec, {"pgbouncer": deployment(2)}, desired.Pods())
    _, sizing = desired.sizing_file("ns", "budget", spec, safe.pgbouncer, {})
    parsed = pgbouncer_ini.parse(sizing.text)
    assert parsed.databases == () and parsed.max_db_connections == 30


@pytest.mark.parametrize(
    ("consumers", "sizing", "conflict"),
    [
        ([{"name": "a", "planConfigMap": "x"}, {"name": "b", "planConfigMap": "x"}], None, "x"),
        ([{"name": "a"}, {"name": "b", "planConfigMap": "budget-a-plan"}], None, "budget-a-plan"),
        (
            [{"name": "a", "planConfigMap": "budget-pgbouncer-sizing"}],
            None,
            "budget-pgbouncer-sizing",
        ),
        ([{"name": "a"}], "budget-a-plan", "budget-a-plan"),
    ],
)
def test_two_writers_of_one_configmap_are_a_spec_error(consumers, sizing, conflict):
    spec = {**SPEC, "consumers": [{**c, "deployment": c["name"]} for c in consumers]}
    spec["pgbouncer"] = {
        "deployment": "pgbouncer",
        **({"sizingConfigMap": sizing} if sizing else {}),
    }
    with pytest.raises(desired.SpecError) as info:
        desired.check_configmaps("budget", spec)
    assert info.value.reason == "ConfigMapConflict"
    assert repr(conflict) in str(info.value) and "planConfigMap" in str(info.value)
    desired.check_configmaps("budget", SPEC)  # the default names never collide


def budget(name, host="pg", port=5432, db="app", role="app"):
    database = {"maxConnections": 100}
    database |= {
        k: v for k, v in (("host", host), ("port", port), ("name", db), ("role", role)) if v
    }
    return {"metadata": {"name": name}, "spec": {**SPEC, "database": database}}


def test_budgets_for_the_same_database_and_role_overlap():
    budgets = [
        budget("a"),
        budget("b", host="PG.ns.svc.cluster.local."),
        budget("c", role="other"),
        budget("d", port=5433),
        budget("e", host=None),
    ]
    assert desired.overlapping("ns", "a", budgets[0]["spec"], budgets) == ["b"]
    assert desired.overlapping("ns", "b", budgets[1]["spec"], budgets) == ["a"]
    assert desired.overlapping("ns", "c", budgets[2]["spec"], budgets) == []
    assert (
        desired.overlapping("ns", "e", budgets[4]["spec"], budgets) == []
    )  # unknown: not compared
    condition = status.overlap_condition(["b"], 3)
    assert condition["status"] == "True" and "ConnectionBudget(s) b" in condition["message"]
    assert status.overlap_condition([], 3)["status"] == "False"


async def test_a_failed_request_is_retried_in_the_background_until_it_succeeds():
    failures = {"left": 3}
    runs: list[str] = []

    async def work(key):
        runs.append(key)
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("403 Forbidden")

    retrier = retry.Retrier(Coalescer(work), first_delay=0.01, max_delay=0.04)
    assert await retrier.request("budget") is False
    assert await retrier.request("budget") is False  # still one pending retry, not two
    assert retrier.pending == {"budget"}
    for _ in range(200):
        if not retrier.pending:
            break
        await asyncio.sleep(0.01)
    assert not retrier.pending and failures["left"] == 0
    assert runs == ["budget"] * 4  # 2 failed requests, 1 failed retry, 1 good retry
    assert await retrier.request("budget") is True
    await retrier.close()


async def test_one_broken_budget_never_stops_the_drift_repair_of_the_others():
    from poolwarden_operator import drift

    repaired: list[str] = []

    async def work(key):
        if key[1] == "broken":
            raise RuntimeError("ConfigMap is immutable")
        repaired.append(key[1])

    class Budgets:
        async def list_budgets(self, namespace):
            return [{"metadata": {"name": n}} for n in ("broken", "a", "b")]

    retrier = retry.Retrier(Coalescer(work), first_delay=10)
    await drift.check(Budgets(), retrier, "ns")
    assert sorted(repaired) == ["a", "b"]
    assert retrier.pending == {("ns", "broken")}
    await retrier.close()
