"""The chart's PgBouncer, rendered by the real `helm`: the fallback sizing lives in a chart-rendered
ConfigMap mounted as a directory (so budget changes never roll PgBouncer), never exceeds the
budget, and every value that reaches pgbouncer.ini is bounded by the schema or a template `fail`.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from test_chart_render import (
    FULL,
    PGBOUNCER,
    Rendered,
    container,
    env_of,
    render,
    render_error,
)

from poolwarden import pgbouncer_ini

FALLBACK = f"{FULL}-pgbouncer-fallback"
SIZING_ENV = (
    "PGBOUNCER_DEFAULT_POOL_SIZE",
    "PGBOUNCER_MAX_DB_CONNECTIONS",
    "PGBOUNCER_RESERVE_POOL_SIZE",
    "PGBOUNCER_MAX_CLIENT_CONN",
)


@pytest.fixture(scope="module")
def defaults() -> Rendered:
    return render()


def pod_template(r: Rendered) -> dict:
    return r.get("Deployment", PGBOUNCER)["spec"]["template"]


def pgbouncer_container(r: Rendered) -> dict:
    return container(pod_template(r)["spec"], "pgbouncer")


def fallback_sizing(r: Rendered) -> pgbouncer_ini.Sizing:
    """The fallback ConfigMap's sizing.ini, parsed as the operator parses its own files."""
    return pgbouncer_ini.parse(r.get("ConfigMap", FALLBACK)["data"]["sizing.ini"])


def values_file(tmp_path, values: dict):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# --- no restart on sizing changes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"pgbouncer.replicaCount": "5"},
        {"postgresql.maxConnections": "200"},
        {"budget.reserved": "20"},
        {"budget.maxClientConn": "4000"},
        {"pgbouncer.replicaCount": "3", "postgresql.maxConnections": "60", "budget.reserved": "4"},
    ],
    ids=lambda c: ",".join(c),
)
def test_a_sizing_upgrade_leaves_the_pod_template_byte_identical_and_changes_the_fallback(change):
    before, after = render(), render(sets=change)
    assert json.dumps(pod_template(after), sort_keys=True) == json.dumps(
        pod_template(before), sort_keys=True
    ), "the PgBouncer pod template changed: helm upgrade would roll every PgBouncer pod"
    assert fallback_sizing(after) != fallback_sizing(before)  # what the pods RELOAD in place


def test_the_fallback_is_a_mounted_directory_never_env(defaults):
    spec = pod_template(defaults)["spec"]
    pgb = pgbouncer_container(defaults)
    [volume] = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == FALLBACK]
    assert volume["configMap"].get("optional") is not True  # the chart renders it: required
    [mount] = [m for m in pgb["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount and mount["readOnly"] is True  # the kubelet refreshes it
    env = env_of(pgb)
    assert env["PGBOUNCER_FALLBACK_DIR"]["value"] == mount["mountPath"]
    assert not set(SIZING_ENV) & set(env), "sizing in the pod's env: a change would restart it"
    assert not pgb.get("envFrom")
    cm = defaults.get("ConfigMap", FALLBACK)
    assert set(cm["data"]) == {"sizing.ini"}
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "pgbouncer"


def test_only_the_fallback_configmap_is_templated_never_the_operators(defaults):
    budget = defaults.get("ConnectionBudget", FULL)["spec"]
    operator_owned = {
        budget["pgbouncer"]["sizingConfigMap"],
        budget["consumers"][0]["planConfigMap"],
    }
    assert defaults.names("ConfigMap") == sorted([FALLBACK, f"{FULL}-db-role"])
    assert FALLBACK not in operator_owned


# --- the fallback never exceeds the budget -----------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "max_connections", "reserved", "clients", "expected"),
    [
        (2, 100, 10, 1000, 45),  # the defaults: 90 / 2 (rollout.maxSurge 0)
        (1, 100, 10, 1000, 90),
        (3, 50, 5, 250, 15),  # 45 / 3
        (7, 20, 3, 1000, 2),  # 17 / 7
        (7, 10, 3, 1000, 1),  # 7 / 7: exactly one each
    ],
)
def test_fallback_configmap_holds_an_equal_slice_within_the_budget(
    replicas, max_connections, reserved, clients, expected
):
    r = render(
        sets={
            "pgbouncer.replicaCount": str(replicas),
            "postgresql.maxConnections": str(max_connections),
            "budget.reserved": str(reserved),
            "budget.maxClientConn": str(clients),
        }
    )
    sizing = fallback_sizing(r)
    database = r.get("ConnectionBudget", FULL)["spec"]["database"]
    assert sizing == pgbouncer_ini.Sizing(
        default_pool_size=expected,
        max_db_connections=expected,
        reserve_pool_size=0,
        max_client_conn=clients,
        max_user_connections=expected,
        databases=(
            pgbouncer_ini.Database(
                name="app",
                host=database["host"],
                port=database["port"],
                dbname=database["name"],
                pool_size=expected,
            ),
        ),
    )
    assert replicas * sizing.max_db_connections <= max_connections - reserved
    budget = r.get("ConnectionBudget", FULL)["spec"]
    assert budget["pgbouncer"]["maxClientConn"] == clients  # one value feeds both


def test_a_fallback_that_cannot_fit_the_budget_fails_naming_the_values():
    # 10 replicas + 0 surge pods need 10 connections; the budget is 10 - 3 = 7.
    err = render_error(
        sets={
            "pgbouncer.replicaCount": "10",
            "postgresql.maxConnections": "10",
            "budget.reserved": "3",
        }
    )
    assert (
        "pgbouncer.replicaCount (10) plus pgbouncer.rollout.maxSurge (0) need at least 10 server "
        "connections (one per pod), but the budget is 7 (postgresql.maxConnections 10 - "
        "budget.reserved 3)" in err
    ), err
    err = render_error(
        sets={
            "postgresql.enabled": "false",
            "externalDatabase.host": "db.example",
            "externalDatabase.password": "x",
            "externalDatabase.maxConnections": "20",
            "budget.reserved": "10",
            "pgbouncer.replicaCount": "11",
        }
    )
    assert "but the budget is 10 (externalDatabase.maxConnections 20 - budget.reserved 10)" in err
    assert "raise externalDatabase.maxConnections" in err, err


# --- idle transactions and shutdown timing -------------------------------------------------------


def test_idle_transaction_timeout_is_rendered_with_a_default(defaults):
    env = env_of(pgbouncer_container(defaults))
    assert env["PGBOUNCER_IDLE_TRANSACTION_TIMEOUT"]["value"] == "60"
    r = render(sets={"pgbouncer.idleTransactionTimeoutSeconds": "15"})
    assert env_of(pgbouncer_container(r))["PGBOUNCER_IDLE_TRANSACTION_TIMEOUT"]["value"] == "15"


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            {
                "pgbouncer.shutdownDelaySeconds": "60",
                "pgbouncer.terminationGracePeriodSeconds": "60",
            },
            "pgbouncer.shutdownDelaySeconds (60) must be below "
            "pgbouncer.terminationGracePeriodSeconds (60)",
        ),
        (
            {"pgbouncer.shutdownDelaySeconds": "90"},
            "pgbouncer.shutdownDelaySeconds (90) must be below "
            "pgbouncer.terminationGracePeriodSeconds (60)",
        ),
        (
            {"app.preStopSleepSeconds": "30"},
            "app.preStopSleepSeconds (30) must be below app.terminationGracePeriodSeconds (30)",
        ),
        (
            {"app.preStopSleepSeconds": "10", "app.terminationGracePeriodSeconds": "5"},
            "app.preStopSleepSeconds (10) must be below app.terminationGracePeriodSeconds (5)",
        ),
    ],
    ids=["pgbouncer-equal", "pgbouncer-above", "app-equal", "app-above"],
)
def test_a_delay_that_does_not_fit_its_grace_period_fails_naming_both_values(sets, expected):
    assert expected in render_error(sets=sets)


def test_delays_inside_their_grace_periods_render():
    r = render(sets={"pgbouncer.shutdownDelaySeconds": "59", "app.preStopSleepSeconds": "29"})
    assert pod_template(r)["spec"]["terminationGracePeriodSeconds"] == 60


# --- the schema bounds every value that reaches pgbouncer.ini ------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"pgbouncer": {"idleTransactionTimeoutSeconds": 0}}, r"idleTransactionTimeoutSeconds"),
        (
            {"pgbouncer": {"idleTransactionTimeoutSeconds": 100000}},
            r"idleTransactionTimeoutSeconds",
        ),
        (
            {"pgbouncer": {"idleTransactionTimeoutSeconds": "60 ; x"}},
            r"idleTransactionTimeoutSeconds",
        ),
        (
            {
                "pgbouncer": {
                    "extraEnv": [
                        {
                            "name": "PGBOUNCER_SERVER_LIFETIME",
                            "value": "3600\nmax_db_connections = 500",
                        }
                    ]
                }
            },
            r"pgbouncer\.extraEnv\.0\.value|extraEnv/0/value",
        ),
        (
            {"pgbouncer": {"extraEnv": [{"name": "PGBOUNCER_STATS_USER", "value": "a, b"}]}},
            r"pgbouncer\.extraEnv\.0\.value|extraEnv/0/value",
        ),
    ],
    ids=[
        "timeout-0",
        "timeout-huge",
        "timeout-text",
        "env-lifetime-newline",
        "env-user-list",
    ],
)
def test_schema_rejects_values_that_would_change_pgbouncer_ini(values, expected, tmp_path):
    err = render_error(values_file(tmp_path, values))
    assert "values don't meet the specifications of the schema" in err, err
    assert re.search(expected, err), err


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("PGBOUNCER_DB_HOST", "postgresql.enabled / externalDatabase.host"),
        (
            "PGBOUNCER_MAX_DB_CONNECTIONS",
            "the budget (budget.*, pgbouncer.replicaCount, pgbouncer.rollout)",
        ),
        ("PGBOUNCER_IDLE_TRANSACTION_TIMEOUT", "pgbouncer.idleTransactionTimeoutSeconds"),
    ],
)
def test_extra_env_cannot_override_what_the_chart_sets(name, source, tmp_path):
    extra = [{"name": "TZ", "value": "UTC"}, {"name": name, "value": "db pool_size=500"}]
    err = render_error(values_file(tmp_path, {"pgbouncer": {"extraEnv": extra}}))
    assert f"pgbouncer.extraEnv[1] sets {name}, which the chart sets from {source}" in err, err


def test_numeric_pgbouncer_settings_pass_through_extra_env(tmp_path):
    path = values_file(
        tmp_path,
        {
            "pgbouncer": {
                "extraEnv": [
                    {"name": "PGBOUNCER_SERVER_LIFETIME", "value": "7200"},
                    {"name": "TZ", "value": "UTC"},
                ]
            }
        },
    )
    env = env_of(pgbouncer_container(render(path)))
    assert env["PGBOUNCER_SERVER_LIFETIME"]["value"] == "7200"
    assert env["TZ"]["value"] == "UTC"
