"""The chart's half of sizing v2, rendered by the real `helm`: the app connects to its own
PgBouncer database alias, the fallback sizing is the operator's include format (parsed here by
`poolwarden.pgbouncer_ini`: Go templates and Python must agree), and each setting that two
components share is one value (wait timeout, prepared statements, PgBouncer's surge).
"""

from __future__ import annotations

import re

import pytest
import yaml
from test_chart_render import (
    APP,
    FULL,
    PGBOUNCER,
    POSTGRESQL,
    Rendered,
    container,
    env_of,
    render,
    render_error,
)

from poolwarden import pgbouncer_ini

FALLBACK = f"{PGBOUNCER}-fallback"
SCHEMA_ERROR = "values don't meet the specifications of the schema"


@pytest.fixture(scope="module")
def defaults() -> Rendered:
    return render()


def app_env(r: Rendered) -> dict[str, dict]:
    return env_of(container(r.get("Deployment", APP)["spec"]["template"]["spec"], "app"))


def pgbouncer_env(r: Rendered) -> dict[str, dict]:
    spec = r.get("Deployment", PGBOUNCER)["spec"]["template"]["spec"]
    return env_of(container(spec, "pgbouncer"))


def consumer(r: Rendered) -> dict:
    [found] = r.get("ConnectionBudget", FULL)["spec"]["consumers"]
    return found


def fallback(r: Rendered) -> pgbouncer_ini.Sizing:
    return pgbouncer_ini.parse(r.get("ConfigMap", FALLBACK)["data"]["sizing.ini"])


def values_file(tmp_path, values: dict):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# --- the app's alias: one name for the budget, the app and PgBouncer ----------------------------


def test_the_app_connects_to_its_alias_and_the_fallback_serves_it(defaults):
    name = consumer(defaults)["name"]
    assert app_env(defaults)["POOLWARDEN_DB_NAME"]["value"] == name == "app"
    sizing = fallback(defaults)
    [alias] = sizing.databases
    database = defaults.get("ConnectionBudget", FULL)["spec"]["database"]
    assert (alias.name, alias.host, alias.port, alias.dbname) == (
        name,
        database["host"],
        database["port"],
        database["name"],
    )
    assert (alias.host, alias.dbname) == (POSTGRESQL, "poolwarden")
    # PgBouncer's own [databases] entry for the database keeps its name: the alias differs.
    assert alias.name != pgbouncer_env(defaults)["PGBOUNCER_DB_NAME"]["value"]


def test_a_database_named_like_the_apps_alias_fails_naming_the_value():
    err = render_error(sets={"postgresql.auth.database": "app"})
    assert 'the app\'s PgBouncer database alias is "app"' in err, err
    assert "postgresql.auth.database" in err, err


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "max_connections", "reserved", "slice_"),
    [
        (2, 0, 1, 100, 10, 45),  # the defaults: 90 / 2, no surge slot
        (2, 1, 0, 100, 10, 30),  # one surge pod: 90 / 3
        (3, 2, 1, 50, 5, 9),  # 45 / 5
        (1, 0, 1, 20, 3, 17),
        (7, 0, 1, 10, 3, 1),  # 7 / 7: exactly one each
    ],
)
def test_the_fallback_is_the_include_format_with_the_slice_for_every_pod_that_may_hold(
    replicas, surge, unavailable, max_connections, reserved, slice_
):
    r = render(
        sets={
            "pgbouncer.replicaCount": str(replicas),
            "pgbouncer.rollout.maxSurge": str(surge),
            "pgbouncer.rollout.maxUnavailable": str(unavailable),
            "postgresql.maxConnections": str(max_connections),
            "budget.reserved": str(reserved),
        }
    )
    sizing = fallback(r)
    assert sizing.max_db_connections == sizing.max_user_connections == slice_
    assert sizing.default_pool_size == slice_ and sizing.reserve_pool_size == 0
    assert [(d.name, d.pool_size) for d in sizing.databases] == [("app", slice_)]
    # One owner of PgBouncer's surge: the Deployment's strategy and the fallback's pod count.
    strategy = r.get("Deployment", PGBOUNCER)["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": surge, "maxUnavailable": unavailable}
    assert (replicas + surge) * sizing.max_user_connections <= max_connections - reserved


def test_the_fallback_renders_byte_identically_to_the_operators_include_apart_from_comments(
    defaults,
):
    text = defaults.get("ConfigMap", FALLBACK)["data"]["sizing.ini"]
    sizing = fallback(defaults)
    rendered = pgbouncer_ini.render(sizing)

    def body(t: str) -> list[str]:
        return [line for line in t.splitlines() if not line.startswith(";")]

    assert body(text) == body(rendered)


def test_a_surge_that_does_not_fit_the_budget_fails_naming_the_values():
    err = render_error(
        sets={
            "pgbouncer.replicaCount": "5",
            "pgbouncer.rollout.maxSurge": "3",
            "postgresql.maxConnections": "10",
            "budget.reserved": "3",
        }
    )
    assert (
        "pgbouncer.replicaCount (5) plus pgbouncer.rollout.maxSurge (3) need at least 8 server "
        "connections (one per pod), but the budget is 7" in err
    ), err


def test_a_rollout_that_could_replace_no_pod_is_rejected(tmp_path):
    values = {"pgbouncer": {"rollout": {"maxSurge": 0, "maxUnavailable": 0}}}
    err = render_error(values_file(tmp_path, values))
    assert SCHEMA_ERROR in err and re.search(r"pgbouncer[./]rollout", err), err


# --- one value, two components -----------------------------------------------------------------


@pytest.mark.parametrize("seconds", [None, "3", "120"])
def test_one_wait_timeout_for_pgbouncer_and_the_apps_pool(seconds):
    r = render(sets={"budget.waitTimeoutSeconds": seconds} if seconds else None)
    expected = seconds or "10"
    assert pgbouncer_env(r)["PGBOUNCER_QUERY_WAIT_TIMEOUT"]["value"] == expected
    assert app_env(r)["POOLWARDEN_POOL_TIMEOUT"]["value"] == expected


@pytest.mark.parametrize(("count", "cache"), [(None, "true"), ("0", "false"), ("1", "true")])
def test_one_prepared_statement_value_for_pgbouncer_and_the_apps_cache(count, cache):
    r = render(sets={"pgbouncer.maxPreparedStatements": count} if count else None)
    assert pgbouncer_env(r)["PGBOUNCER_MAX_PREPARED_STATEMENTS"]["value"] == (count or "200")
    assert app_env(r)["POOLWARDEN_STATEMENT_CACHE"]["value"] == cache


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        ({"budget.waitTimeoutSeconds": "0"}, "waitTimeoutSeconds"),
        ({"pgbouncer.maxPreparedStatements": "-1"}, "maxPreparedStatements"),
        ({"pgbouncer.rollout.maxSurge": "-1"}, "maxSurge"),
        ({"app.threadsPerWorker": "-1"}, "threadsPerWorker"),
        ({"app.maxPoolPerWorker": "0"}, "maxPoolPerWorker"),
        ({"app.sizeFor": "peak"}, "sizeFor"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_the_schema_rejects_nonsense_naming_the_key(sets, key):
    err = render_error(sets=sets)
    assert SCHEMA_ERROR in err and key in err, err


@pytest.mark.parametrize(
    ("component", "name", "value"),
    [
        ("app", "POOLWARDEN_POOL_TIMEOUT", "budget.waitTimeoutSeconds"),
        ("app", "POOLWARDEN_STATEMENT_CACHE", "pgbouncer.maxPreparedStatements"),
        ("app", "POOLWARDEN_DB_NAME", "the app's consumer name"),
        ("pgbouncer", "PGBOUNCER_QUERY_WAIT_TIMEOUT", "budget.waitTimeoutSeconds"),
        ("pgbouncer", "PGBOUNCER_MAX_PREPARED_STATEMENTS", "pgbouncer.maxPreparedStatements"),
    ],
)
def test_extra_env_cannot_override_a_shared_value(component, name, value, tmp_path):
    extra = [{"name": "TZ", "value": "UTC"}, {"name": name, "value": "1"}]
    err = render_error(values_file(tmp_path, {component: {"extraEnv": extra}}))
    assert f"{component}.extraEnv[1] sets {name}, which the chart sets from {value}" in err, err


def test_other_app_variables_pass_through_extra_env(tmp_path):
    extra = [{"name": "POOLWARDEN_SLOW_QUERY_SECONDS", "value": "0.5"}]
    r = render(values_file(tmp_path, {"app": {"extraEnv": extra}}))
    assert app_env(r)["POOLWARDEN_SLOW_QUERY_SECONDS"]["value"] == "0.5"


# --- what the app is planned for ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "size_for"),
    [
        ({}, "replicas"),
        ({"app.autoscaling.enabled": "true"}, "maxReplicas"),  # the chart's HPA: its maximum
        ({"app.autoscaling.enabled": "true", "app.sizeFor": "replicas"}, "replicas"),
        ({"app.sizeFor": "maxReplicas"}, "maxReplicas"),  # no HPA: the operator uses replicas
    ],
)
def test_size_for_follows_the_hpa_unless_set(sets, size_for):
    assert consumer(render(sets=sets))["sizeFor"] == size_for


def test_threads_and_the_async_cap_reach_the_budget(defaults):
    assert consumer(defaults)["threadsPerWorker"] == 0
    assert "maxPoolPerWorker" not in consumer(defaults)  # the planner's default cap
    r = render(sets={"app.threadsPerWorker": "8", "app.maxPoolPerWorker": "16"})
    assert (consumer(r)["threadsPerWorker"], consumer(r)["maxPoolPerWorker"]) == (8, 16)
