"""The operator's pure half: planner inputs from objects, files, status and Event text."""

from __future__ import annotations

import pytest

from poolwarden import pgbouncer_ini, planfile, planner
from poolwarden_operator import desired, kube, status

SPEC = {
    "database": {"maxConnections": 100, "reserved": 10},
    "pgbouncer": {"deployment": "pgbouncer"},
    "consumers": [
        {"name": "web", "deployment": "web", "workersPerPod": 4, "weight": 3},
        {
            "name": "worker",
            "deployment": "worker",
            "planConfigMap": "worker-plan",
            "overflow": "half",
        },
    ],
}


def make_deployment(replicas=2, strategy=None, selector=None):
    spec = {"replicas": replicas, "selector": selector or {"matchLabels": {"app": "x"}}}
    if strategy is not None:
        spec["strategy"] = strategy
    return {"metadata": {"name": "x"}, "spec": spec}


def make_plan(spec=SPEC, web=4, worker=2):
    deployments = {
        "pgbouncer": make_deployment(1),
        "web": make_deployment(web),
        "worker": make_deployment(worker),
    }
    return planner.plan(*desired.planner_inputs(spec, deployments))


@pytest.mark.parametrize(
    ("strategy", "replicas", "surge"),
    [
        (None, 4, 1),
        ({"type": "Recreate"}, 4, 0),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%"}}, 3, 2),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3}}, 1, 3),
    ],
)
def test_surge_comes_from_the_deployment_strategy(strategy, replicas, surge):
    assert desired.surge_of(make_deployment(replicas, strategy)) == surge


def test_missing_consumer_counts_as_scaled_to_zero_but_missing_pgbouncer_stops():
    inputs = desired.planner_inputs(
        SPEC, {"pgbouncer": make_deployment(1), "web": make_deployment(2)}
    )
    assert [c.replicas for c in inputs[2]] == [2, 0]
    with pytest.raises(desired.SpecError) as info:
        desired.planner_inputs(SPEC, {"web": make_deployment(2)})
    assert info.value.reason == "PgBouncerMissing"
    assert "spec.pgbouncer.deployment" in str(info.value)


def test_files_are_valid_contract_files_with_default_and_custom_names():
    generation, files = desired.files("prod", "budget", SPEC, make_plan(), {})
    assert generation == 1
    by_name = {f.configmap: f for f in files}
    assert set(by_name) == {"budget-web-plan", "worker-plan", "budget-pgbouncer-sizing"}
    web = planfile.parse(by_name["budget-web-plan"].text)
    assert (web.budget, web.consumer, web.generation) == ("prod/budget", "web", 1)
    sizing = pgbouncer_ini.parse(by_name["budget-pgbouncer-sizing"].text)
    assert sizing.max_db_connections == 45  # 90 // (1 replica + 1 surge: 25% of 1, rounded up)


def test_only_changed_files_get_a_new_generation():
    plan = make_plan()
    generation, files = desired.files("prod", "budget", SPEC, plan, {})
    applied = status.applied(SPEC, generation, 1, plan, files, {}, "2026-01-01T00:00:00Z")
    # Same input again: same generation, byte-identical files.
    again_generation, again = desired.files("prod", "budget", SPEC, plan, applied)
    assert again_generation == generation and again == files
    # Scaling web up shrinks both shares: new files and generation, but PgBouncer's bytes stay.
    scaled = make_plan(web=8)
    new_generation, new_files = desired.files("prod", "budget", SPEC, scaled, applied)
    assert new_generation == generation + 1
    old = {f.configmap: f for f in files}
    new = {f.configmap: f for f in new_files}
    assert new["budget-web-plan"].text != old["budget-web-plan"].text
    assert planfile.parse(new["budget-web-plan"].text).generation == 2
    assert new["budget-pgbouncer-sizing"].text == old["budget-pgbouncer-sizing"].text


def test_a_file_written_before_a_crash_never_gets_its_generation_reused():
    # The operator wrote generation-1 files, then died before recording them in the status.
    plan = make_plan()
    _, files = desired.files("prod", "budget", SPEC, plan, {})
    written = max(
        pgbouncer_ini.generation(f.text) if f.key == pgbouncer_ini.FILE_NAME
        else planfile.parse(f.text).generation
        for f in files
    )
    assert written == 1
    # Restarted with an empty status, it plans again for new replica counts: the new files
    # must carry a higher generation than anything the pods may already have read.
    generation, new_files = desired.files("prod", "budget", SPEC, make_plan(web=8), {}, written)
    assert generation == 2
    web = {f.configmap: f for f in new_files}["budget-web-plan"]
    assert planfile.parse(web.text).generation == 2


def test_status_conditions_keep_their_transition_time():
    plan = make_plan()
    generation, files = desired.files("prod", "budget", SPEC, plan, {})
    first = status.applied(SPEC, generation, 1, plan, files, {}, "T1")
    second = status.applied(SPEC, generation, 2, plan, files, first, "T2")
    assert [c["lastTransitionTime"] for c in second["conditions"]] == ["T1", "T1"]
    assert second["observedGeneration"] == 2
    assert second["poolPerWorker"] == first["poolPerWorker"]
    invalid = status.invalid(ValueError("nope"), "InvalidBudget", 3, second, "T3")
    ready = {c["type"]: c for c in invalid["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "False",
        "InvalidBudget",
        "T3",
    )


def test_overcommitted_plan_event_is_a_warning_saying_what_to_change():
    spec = {**SPEC, "database": {"maxConnections": 12, "reserved": 2}}
    plan = make_plan(spec, web=5, worker=1)
    kind, reason, message = status.plan_event(plan, 7)
    assert (kind, reason) == ("Warning", "Overcommitted")
    assert (
        f"raise spec.database.maxConnections to at least {planner.needed_max_connections(plan)}"
        in message
    )
    kind, reason, message = status.plan_event(make_plan(), 8)
    assert (kind, reason) == ("Normal", "PlanUpdated")
    assert message.startswith("plan generation 8: web pool_size")


def test_watched_fields_ignore_status_and_template():
    a = make_deployment(3)
    b = {**make_deployment(3), "status": {"readyReplicas": 1}}
    b["spec"]["template"] = {"metadata": {"labels": {"new": "1"}}}
    assert desired.watched_fields(a) == desired.watched_fields(b)
    assert desired.watched_fields(a) != desired.watched_fields(make_deployment(4))


def test_label_selector_from_match_labels_and_expressions():
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert (
        kube.label_selector(make_deployment(selector=selector))
        == "a=1,b=2,tier in (web,api),!canary"
    )
