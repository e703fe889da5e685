"""Deployments that join a budget by label: the pure half (which join, with what, which are
refused and why), their plan files in their own namespace, and the Discovery condition."""

from __future__ import annotations

import pytest

from poolwarden import planner
from poolwarden_operator import config, desired, names, status

SPEC = {
    "database": {"maxConnections": 100, "reserved": 10, "host": "pg", "name": "shop"},
    "pgbouncer": {"deployment": "pgbouncer"},
    "consumers": [{"name": "app", "deployment": "app", "workersPerPod": 2}],
}


def labelled(name, namespace="shop", budget="budget", uid="u-1", **annotations):
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": {names.BUDGET_LABEL: budget},
            "annotations": {
                f"poolwarden.io/{k.replace('_', '-')}": v for k, v in annotations.items()
            },
        },
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}}},
    }


def discover(*deployments, spec=SPEC, unwatched=()):
    return desired.discover("shop", "budget", spec, list(deployments), unwatched)


def test_a_labelled_deployment_joins_with_its_annotations():
    found = discover(labelled("web", workers="4", threads="8", weight="3", overflow="quarter"))
    assert found.problems == ()
    (item,) = found.consumers
    assert item == {
        "name": "web", "deployment": "web", "discovered": True, "workersPerPod": 4,
        "threadsPerWorker": 8, "weight": 3, "overflow": "quarter",
    }  # fmt: skip
    spec = desired.with_discovered(SPEC, found)
    deployments = {
        "pgbouncer": {"spec": {"replicas": 1}},
        "app": {"spec": {"replicas": 2}},
        **dict(found.deployments),
    }
    plan = planner.plan(*desired.planner_inputs(spec, deployments))
    web = plan.consumer("web")
    assert (web.replicas, web.workers, web.threads, web.weight) == (3, 4, 8, 3)
    assert web.pool_size + web.max_overflow <= 8  # a threaded worker never gets more than threads
    app = plan.consumer("app")
    assert web.server_pool + app.server_pool == plan.pgbouncer.max_user_connections
    assert abs(web.server_pool - 3 * app.server_pool) <= 3  # weight 3:1, rounded


def test_defaults_are_one_async_worker_of_weight_one_named_like_the_deployment():
    (item,) = discover(labelled("web")).consumers
    spec = desired.with_discovered(SPEC, discover(labelled("web")))
    _, _, consumers = desired.planner_inputs(
        spec, {"pgbouncer": {"spec": {}}, "app": {"spec": {}}, "web": {"spec": {}}}
    )
    web = consumers[-1]
    assert (item["name"], web.workers, web.threads, web.weight, web.overflow) == (
        "web",
        1,
        0,
        1,
        "none",
    )


def test_the_consumer_annotation_names_it_and_its_plan_configmap():
    found = discover(labelled("web-v2", consumer="web", plan_configmap="web-plan"))
    (item,) = found.consumers
    assert (item["name"], item["planConfigMap"]) == ("web", "web-plan")


@pytest.mark.parametrize(
    ("annotations", "named", "fix"),
    [
        ({"workers": "abc"}, "poolwarden.io/workers is 'abc'", "from 1 to 64"),
        ({"workers": "0"}, "poolwarden.io/workers is '0'", "poolwarden.io/workers=1 --overwrite"),
        ({"workers": "65"}, "poolwarden.io/workers", "from 1 to 64"),
        ({"threads": "-1"}, "poolwarden.io/threads is '-1'", "from 0 to 1024"),
        ({"weight": "1.5"}, "poolwarden.io/weight is '1.5'", "from 1 to 100"),
        ({"overflow": "lots"}, "poolwarden.io/overflow is 'lots'", "none, quarter, half"),
        ({"consumer": "Web"}, "poolwarden.io/consumer is 'Web'", "poolwarden.io/consumer=web"),
        ({"consumer": "app"}, "'app' is already used by spec.consumers", "poolwarden.io/consumer"),
        ({"consumer": "shop"}, "PgBouncer's own database", "poolwarden.io/consumer"),
        ({"consumer": "a_b"}, "contains '_'", "poolwarden.io/plan-configmap"),
        ({"plan_configmap": "Bad_Name"}, "poolwarden.io/plan-configmap is 'Bad_Name'", "fix it"),
        ({"plan_configmap": "budget-pgbouncer-sizing"}, "already written", "plan-configmap"),
    ],
)
def test_a_bad_annotation_refuses_that_deployment_alone_and_names_the_fix(annotations, named, fix):
    found = discover(labelled("web", **annotations), labelled("good", uid="u-2"))
    assert [c["name"] for c in found.consumers] == ["good"]
    (problem,) = found.problems
    assert problem.startswith("Deployment web: "), problem
    assert named in problem and fix in problem, problem
    condition = status.discovery_condition(found, 7)
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Discovery",
        "False",
        "InvalidAnnotation",
    )
    assert named in condition["message"] and "Joined: good (good)" in condition["message"]


def test_a_deployment_name_that_is_no_alias_asks_for_the_consumer_annotation():
    (problem,) = discover(labelled("web.v2")).problems
    assert "its name 'web.v2'" in problem and "poolwarden.io/consumer=web-v2" in problem


def test_two_deployments_with_one_name_the_second_is_refused():
    found = discover(labelled("a", consumer="web"), labelled("b", consumer="web", uid="u-2"))
    assert [c["deployment"] for c in found.consumers] == ["a"]
    assert "already used by Deployment a" in found.problems[0]


def test_listed_deployments_are_not_added_twice_and_pgbouncer_cannot_join():
    found = discover(labelled("app"), labelled("pgbouncer"))
    assert found.consumers == ()
    assert found.problems == (
        "Deployment pgbouncer is the budget's PgBouncer and cannot also be a consumer: remove "
        "its label poolwarden.io/budget",
    )


def test_other_namespaces_join_only_with_the_budget_namespace_annotation():
    here_for_elsewhere = labelled("x", budget_namespace="other")
    there_for_us = labelled("web", namespace="web-ns", budget_namespace="shop", uid="u-9")
    there_for_theirs = labelled("api", namespace="web-ns")  # a budget "budget" in web-ns
    found = discover(here_for_elsewhere, there_for_us, there_for_theirs)
    assert found.problems == ()
    (item,) = found.consumers
    assert item["deployment"] == "web-ns/web" and item["namespace"] == "web-ns"
    assert item["owner"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                             "uid": "u-9"}  # fmt: skip
    assert status.discovered(found) == [{"name": "web", "deployment": "web", "namespace": "web-ns"}]


def test_an_accepted_namespace_the_operator_does_not_watch_is_reported():
    (problem,) = discover(unwatched=("web-ns",)).problems
    assert "'web-ns'" in problem and "discovery.namespaces" in problem


def test_a_consumer_of_another_namespace_gets_its_file_there_owned_by_its_deployment():
    found = discover(labelled("web", namespace="web-ns", budget_namespace="shop", uid="u-9"))
    spec = desired.with_discovered(SPEC, found)
    deployments = {"pgbouncer": {"spec": {"replicas": 1}}, "app": {"spec": {"replicas": 2}}}
    plan = planner.plan(*desired.planner_inputs(spec, deployments | dict(found.deployments)))
    _, files = desired.files("shop", "budget", spec, plan, {})
    by_consumer = {f.consumer: f for f in files}
    web, app = by_consumer["web"], by_consumer["app"]
    assert (web.namespace, web.configmap, web.ref) == (
        "web-ns",
        "budget-web-plan",
        "web-ns/budget-web-plan",
    )
    assert web.owner["kind"] == "Deployment" and web.owner["uid"] == "u-9"
    assert (app.namespace, app.owner, app.ref) == ("", None, "budget-app-plan")
    applied = status.applied(spec, 1, 1, plan, files, {}, "now")
    assert set(applied["files"]) == {
        "budget-app-plan",
        "web-ns/budget-web-plan",
        "budget-pgbouncer-sizing",
    }
    # A second pass with that status writes no new generation.
    again, files_again = desired.files("shop", "budget", spec, plan, applied)
    assert again == 1 and files_again == files


def test_the_same_configmap_name_in_two_namespaces_is_no_conflict():
    found = discover(labelled("web", namespace="web-ns", budget_namespace="shop",
                              plan_configmap="budget-app-plan"))  # fmt: skip
    assert found.problems == ()
    desired.check_configmaps("budget", desired.with_discovered(SPEC, found))


def test_join_fields_change_with_the_label_and_each_annotation_only():
    d = labelled("web", workers="2")
    base = desired.join_fields(d)
    d["metadata"]["annotations"]["unrelated"] = "x"
    assert desired.join_fields(d) == base
    d["metadata"]["annotations"][names.WEIGHT_ANNOTATION] = "2"
    assert desired.join_fields(d) != base
    assert desired.joined_budget(d) == ("shop", "budget")
    del d["metadata"]["labels"][names.BUDGET_LABEL]
    assert desired.joined_budget(d) is None


def test_consumer_namespaces_setting():
    env = {"POOLWARDEN_NAMESPACE": "shop"}
    assert config.Settings.from_env(env).consumer_namespaces == ()
    env["POOLWARDEN_CONSUMER_NAMESPACES"] = "web, shop,api,web"
    assert config.Settings.from_env(env).consumer_namespaces == ("web", "api")
    env["POOLWARDEN_CONSUMER_NAMESPACES"] = "Web"
    with pytest.raises(config.ConfigError, match="POOLWARDEN_CONSUMER_NAMESPACES"):
        config.Settings.from_env(env)
