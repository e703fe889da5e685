"""The operator's pure half: planner inputs from objects, files, status and Event text."""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from poolwarden import pgbouncer_ini, planfile, planner
from poolwarden_operator import desired, kube, status

CRD = (
    pathlib.Path(__file__).resolve().parents[2]
    / "charts/poolwarden/crds/connectionbudgets.poolwarden.io.yaml"
)
SPEC = {
    "database": {"maxConnections": 100, "reserved": 10, "host": "pg.shop.svc", "name": "shop"},
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


def test_the_sizing_include_has_one_alias_per_consumer_with_its_server_pool():
    plan = make_plan()
    _, files = desired.files("prod", "budget", SPEC, plan, {})
    text = {f.configmap: f for f in files}["budget-pgbouncer-sizing"].text
    sizing = pgbouncer_ini.parse(text)
    assert [(d.name, d.host, d.port, d.dbname) for d in sizing.databases] == [
        ("web", "pg.shop.svc", 5432, "shop"),
        ("worker", "pg.shop.svc", 5432, "shop"),
    ]
    pools = {d.name: d.pool_size for d in sizing.databases}
    assert pools == {c.name: c.server_pool for c in plan.consumers}
    # Weights 3:1 over the pod's whole limit, and PgBouncer caps their sum per pod.
    assert sum(pools.values()) == sizing.max_db_connections == sizing.max_user_connections
    assert abs(pools["web"] - 3 * pools["worker"]) <= 4


def test_a_budget_without_database_host_or_name_cannot_give_aliases():
    spec = {**SPEC, "database": {"maxConnections": 100, "reserved": 10}}
    with pytest.raises(desired.SpecError) as info:
        desired.files("prod", "budget", spec, make_plan(spec), {})
    assert info.value.reason == "DatabaseUnnamed"
    assert "spec.database.host and spec.database.name" in str(info.value)


def test_threads_and_the_async_cap_reach_the_planner():
    spec = {
        **SPEC,
        "consumers": [
            {"name": "web", "deployment": "web", "threadsPerWorker": 8},
            {"name": "worker", "deployment": "worker", "maxPoolPerWorker": 3},
        ],
    }
    deployments = {"pgbouncer": make_deployment(1), "web": make_deployment(2)}
    deployments["worker"] = make_deployment(2)
    _, _, consumers = desired.planner_inputs(spec, deployments)
    assert [(c.threads, c.max_pool_per_worker, c.cap) for c in consumers] == [
        (8, 0, 8),
        (0, 3, 3),
    ]
    plan = planner.plan(*desired.planner_inputs(spec, deployments))
    assert plan.consumer("web").share <= 8 and plan.consumer("worker").share <= 3


def make_hpa(target, max_replicas, kind="Deployment", api_version="apps/v1"):
    return {
        "metadata": {"name": f"{target}-hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": target},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
        },
    }


def test_hpas_are_read_by_the_deployment_they_scale():
    hpas = [
        make_hpa("web", 10),
        make_hpa("web", 12),  # two HPAs for one Deployment: the larger maximum
        make_hpa("worker", 50, kind="StatefulSet", api_version="apps/v1"),
        make_hpa("cron", 7, api_version="example.com/v1"),
    ]
    assert desired.hpa_max_replicas(hpas) == {"web": 12}
    assert desired.hpa_fields(make_hpa("web", 10)) == ("web", 10)
    assert desired.hpa_fields({"spec": {}}) == (None, None)


@pytest.mark.parametrize(
    ("size_for", "live", "hpa", "planned", "surge"),
    [
        ("replicas", 2, 10, 2, 1),  # the live count, whatever the HPA says
        ("maxReplicas", 2, 10, 10, 3),  # the HPA's maximum; surge 25% of 10, rounded up
        ("maxReplicas", 2, None, 2, 1),  # no HPA: the live count
        ("maxReplicas", 12, 10, 12, 3),  # scaled by hand above the HPA: the live count
    ],
)
def test_size_for_max_replicas_plans_for_the_hpa_maximum(size_for, live, hpa, planned, surge):
    spec = {**SPEC, "consumers": [{"name": "web", "deployment": "web", "sizeFor": size_for}]}
    deployments = {"pgbouncer": make_deployment(1), "web": make_deployment(live)}
    max_replicas = desired.hpa_max_replicas([make_hpa("web", hpa)] if hpa else [])
    _, _, [web] = desired.planner_inputs(spec, deployments, max_replicas=max_replicas)
    assert (web.replicas, web.surge) == (planned, surge)
    assert desired.sized_deployments(spec) == (["web"] if size_for == "maxReplicas" else [])


def test_only_changed_files_get_a_new_generation():
    plan = make_plan()
    generation, files = desired.files("prod", "budget", SPEC, plan, {})
    applied = status.applied(SPEC, generation, 1, plan, files, {}, "2026-01-01T00:00:00Z")
    # Same input again: same generation, byte-identical files.
    again_generation, again = desired.files("prod", "budget", SPEC, plan, applied)
    assert again_generation == generation and again == files
    # Scaling web up changes nothing: its workers already get what its server pool can serve.
    same_generation, same = desired.files("prod", "budget", SPEC, make_plan(web=8), applied)
    assert same_generation == generation and same == files
    # Fewer workers per pod: each may use more of web's server pool. A new generation for web's
    # file; the worker's file and PgBouncer's bytes stay.
    spec = {
        **SPEC,
        "consumers": [{**SPEC["consumers"][0], "workersPerPod": 2}, SPEC["consumers"][1]],
    }
    new_generation, new_files = desired.files("prod", "budget", spec, make_plan(spec), applied)
    assert new_generation == generation + 1
    old = {f.configmap: f for f in files}
    new = {f.configmap: f for f in new_files}
    assert new["budget-web-plan"].text != old["budget-web-plan"].text
    assert planfile.parse(new["budget-web-plan"].text).generation == 2
    assert new["worker-plan"] == old["worker-plan"]
    assert new["budget-pgbouncer-sizing"].text == old["budget-pgbouncer-sizing"].text


def test_a_file_written_before_a_crash_never_gets_its_generation_reused():
    # The operator wrote generation-1 files, then died before recording them in the status.
    plan = make_plan()
    _, files = desired.files("prod", "budget", SPEC, plan, {})
    written = max(
        pgbouncer_ini.generation(f.text)
        if f.key == pgbouncer_ini.FILE_NAME
        else planfile.parse(f.text).generation
        for f in files
    )
    assert written == 1
    # Restarted with an empty status, it plans again for new replica counts: the new files
    # must carry a higher generation than anything the pods may already have read.
    generation, new_files = desired.files("prod", "budget", SPEC, make_plan(worker=0), {}, written)
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


def test_status_reports_each_consumers_server_pool_and_the_utilization():
    plan = make_plan()
    generation, files = desired.files("prod", "budget", SPEC, plan, {})
    result = status.applied(SPEC, generation, 1, plan, files, {}, "T1")
    assert re.fullmatch(r"\d\.\d\d", result["utilization"])
    assert float(result["utilization"]) == pytest.approx(plan.utilization, abs=0.005)
    assert [
        (c["name"], c["serverPool"], c["poolSize"], c["maxOverflow"]) for c in result["consumers"]
    ] == [(c.name, c.server_pool, c.pool_size, c.max_overflow) for c in plan.consumers]
    assert result["pgbouncer"]["maxUserConnections"] == plan.pgbouncer.max_user_connections
    assert result["clientLimit"] == plan.client_limit


def test_overcommitted_on_the_server_side_says_so_and_what_to_change():
    # 2 pods x 1 connection each (budget 3 // 2 PgBouncer pods) for 2 active consumers.
    spec = {**SPEC, "database": {**SPEC["database"], "maxConnections": 5, "reserved": 2}}
    plan = make_plan(spec, web=5, worker=1)
    assert plan.overcommitted
    kind, reason, message = status.plan_event(plan, 7)
    assert (kind, reason) == ("Warning", "Overcommitted")
    assert "server side" in message and "client side" not in message
    # 2 active consumers x 2 PgBouncer pods (1 replica + 1 surge) + reserved 2.
    assert "raise spec.database.maxConnections to at least 6" in message
    kind, reason, message = status.plan_event(make_plan(), 8)
    assert (kind, reason) == ("Normal", "PlanUpdated")
    assert message.startswith("plan generation 8: web server_pool")


def test_overcommitted_on_the_client_side_names_max_client_conn():
    spec = {**SPEC, "pgbouncer": {"deployment": "pgbouncer", "maxClientConn": 10}}
    plan = make_plan(spec, web=4, worker=2)  # (4+1) x 4 + (2+1) x 1 = 23 workers > 10 x 1
    assert plan.overcommitted
    message = status.overcommitted_message(plan)
    assert "client side" in message and "server side" not in message
    assert "raise spec.pgbouncer.maxClientConn to at least 23" in message


def test_watched_fields_ignore_status_and_template():
    a = make_deployment(3)
    b = {**make_deployment(3), "status": {"readyReplicas": 1}}
    b["spec"]["template"] = {"metadata": {"labels": {"new": "1"}}}
    assert desired.watched_fields(a) == desired.watched_fields(b)
    assert desired.watched_fields(a) != desired.watched_fields(make_deployment(4))


def crd_consumer_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["consumers"]["items"]


def test_the_crd_consumer_name_is_exactly_a_pgbouncer_alias():
    # Two owners must agree: the CRD's pattern (enforced by the API server) and the alias
    # pattern pgbouncer_ini validates before it renders the include.
    name = crd_consumer_schema()["properties"]["name"]
    assert name["pattern"] == pgbouncer_ini.ALIAS_PATTERN
    for candidate in ["app", "a", "web_api", "w-1", "x" * 63, "App", "1app", "x" * 64, "a.b"]:
        allowed = bool(re.match(name["pattern"], candidate)) and len(candidate) <= name["maxLength"]
        assert allowed == bool(re.match(pgbouncer_ini.ALIAS_PATTERN, candidate)), candidate


def test_the_crd_size_for_enum_is_what_the_operator_reads():
    size_for = crd_consumer_schema()["properties"]["sizeFor"]
    assert desired.SIZE_FOR_MAX_REPLICAS in size_for["enum"]
    assert size_for["default"] == "replicas" and set(size_for["enum"]) == {
        "replicas",
        "maxReplicas",
    }


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
