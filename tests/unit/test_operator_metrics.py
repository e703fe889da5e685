"""The operator's Prometheus series: pure samples from a real plan's status, the exposition a
real prometheus-client registry serves, and the names every other place must agree on."""

from __future__ import annotations

import pathlib
import socket
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poolwarden import planner
from poolwarden_operator import applied, bouncers, config, desired, inuse, metrics, status

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = {
    "database": {"maxConnections": 100, "reserved": 10, "host": "pg.shop.svc", "name": "shop"},
    "pgbouncer": {"deployment": "pgbouncer"},
    "consumers": [
        {"name": "web", "deployment": "web", "workersPerPod": 4, "weight": 3},
        {"name": "worker", "deployment": "worker", "overflow": "half"},
    ],
}
NOW = "2026-01-01T00:00:00Z"


def deployment(replicas):
    return {"metadata": {"name": "x"}, "spec": {"replicas": replicas}}


def planned(spec=SPEC, web=4, worker=2, bouncers=1, max_client_conn=None):
    if max_client_conn is not None:
        spec = {**spec, "pgbouncer": {**spec["pgbouncer"], "maxClientConn": max_client_conn}}
    found = {
        "pgbouncer": deployment(bouncers), "web": deployment(web), "worker": deployment(worker)
    }  # fmt: skip
    plan = planner.plan(*desired.planner_inputs(spec, found))
    generation, files = desired.files("shop", "budget", spec, plan, {})
    return spec, plan, status.applied(spec, generation, 3, plan, files, {}, NOW)


def with_applied(reported, web_generations, bouncer_lagging=()):
    """The status as a pass leaves it after asking two ready web pods and the PgBouncer pods
    (reconcile's steps): ``bouncer_lagging`` the PgBouncer pods that did not confirm."""
    expected = {c["name"]: reported["files"][f"budget-{c['name']}-plan"]["generation"]
                for c in reported["consumers"]}
    workers = {c["name"]: c["workersPerPod"] for c in reported["consumers"]}
    reports = [applied.Report("web", f"web-{i}", g) for i, g in enumerate(web_generations)]
    judged = bouncers.Judged(1, tuple((p, "unreachable") for p in bouncer_lagging))
    condition = bouncers.condition(applied.condition(expected, workers, reports, 3), judged)
    return {
        **reported,
        "conditions": status.merge_conditions(reported["conditions"], [condition], NOW),
        "applied": applied.summary(expected, workers, reports) | bouncers.summary(judged),
    }


def by_name(found):
    return {(s.name, s.labels): s.value for s in found}


def test_samples_of_an_applied_plan_are_the_plan_and_its_status():
    spec, plan, reported = planned()
    reported = with_applied(reported, [(1, 1, 1, 1), (1, 1, 1, 1)])
    got = by_name(metrics.samples("shop", "budget", spec, reported))
    budget = ("shop", "budget")
    assert got[(metrics.BUDGET_CONNECTIONS, budget)] == plan.budget == 90
    assert got[(metrics.BUDGET_SERVER_CONNECTIONS_PLANNED, budget)] == plan.server_total
    assert got[(metrics.BUDGET_UTILIZATION, budget)] == pytest.approx(plan.utilization, abs=0.005)
    assert 0 < got[(metrics.BUDGET_UTILIZATION, budget)] <= 1
    assert got[(metrics.BUDGET_OVERCOMMITTED, budget)] == 0
    assert got[(metrics.BUDGET_PLAN_GENERATION, budget)] == reported["planGeneration"] == 1
    assert got[(metrics.BUDGET_READY, budget)] == 1
    for c in plan.consumers:
        labels = (*budget, c.name)
        assert got[(metrics.CONSUMER_SERVER_POOL, labels)] == c.server_pool
        assert got[(metrics.CONSUMER_POOL_SIZE, labels)] == c.pool_size
        assert got[(metrics.CONSUMER_MAX_OVERFLOW, labels)] == c.max_overflow
    assert got[(metrics.BUDGET_PLAN_APPLIED, budget)] == 1
    assert got[(metrics.BUDGET_PODS_LAGGING, budget)] == 0
    assert got[(metrics.BUDGET_PGBOUNCER_PODS_LAGGING, budget)] == 0
    # every series of a pass, once per budget or per consumer, nothing else; the in-use
    # series come from the PgBouncer pods' pools, not from a pass
    assert len(got) == 9 + 3 * len(plan.consumers)
    assert {name for name, _ in got} == set(metrics.SERIES) - set(metrics.IN_USE)


def test_pods_behind_their_plan_are_counted():
    spec, _, reported = planned()
    reported = with_applied(reported, [(1, 1, 1, 1), (1, 0, 1, 1)])
    got = by_name(metrics.samples("shop", "budget", spec, reported))
    assert got[(metrics.BUDGET_PLAN_APPLIED, ("shop", "budget"))] == 0
    assert got[(metrics.BUDGET_PODS_LAGGING, ("shop", "budget"))] == 1
    assert metrics.lagging(reported)
    assert reported["applied"] == {"readyPods": 2, "laggingPods": 1, "lagging": ["web-1"],
                                   "pgbouncerPods": 0, "pgbouncerLaggingPods": 0,
                                   "pgbouncerLagging": []}  # fmt: skip


def test_pgbouncer_pods_behind_their_sizing_file_are_counted():
    spec, _, reported = planned()
    reported = with_applied(reported, [(1, 1, 1, 1)], bouncer_lagging=["pgb-a", "pgb-b"])
    got = by_name(metrics.samples("shop", "budget", spec, reported))
    assert got[(metrics.BUDGET_PLAN_APPLIED, ("shop", "budget"))] == 0
    assert got[(metrics.BUDGET_PODS_LAGGING, ("shop", "budget"))] == 0
    assert got[(metrics.BUDGET_PGBOUNCER_PODS_LAGGING, ("shop", "budget"))] == 2
    assert metrics.lagging(reported)


def test_in_use_series_come_from_the_sampler_and_go_with_the_budget():
    ledger = metrics.Ledger()
    spec, _, reported = planned()
    key = ("shop", "budget")
    counts = {"web": inuse.Counts(server_active=4, server_idle=1, clients_waiting=2)}
    ledger.set_in_use(key, metrics.in_use_samples(*key, counts, {}))  # no pass yet: ignored
    assert not scrape_text(generate_latest(metrics.registry(ledger)).decode())
    ledger.set(key, metrics.samples(*key, spec, reported))
    ledger.set_in_use(key, metrics.in_use_samples(*key, counts, {"web": (9, 3)}))
    got = scrape_text(generate_latest(metrics.registry(ledger)).decode())
    web = (("budget", "budget"), ("consumer", "web"), ("namespace", "shop"))
    assert got[(metrics.CONSUMER_SERVER_CONNECTIONS, (*web, ("state", "active")))] == 4
    assert got[(metrics.CONSUMER_SERVER_CONNECTIONS, (*web, ("state", "idle")))] == 1
    assert got[(metrics.CONSUMER_CLIENTS_WAITING, web)] == 2
    assert got[(metrics.CONSUMER_SERVER_CONNECTIONS_PEAK, web)] == 9
    assert got[(metrics.CONSUMER_CLIENTS_WAITING_PEAK, web)] == 3
    passes = f"{metrics.BUDGET_PASSES}_total"
    assert got[(passes, (("budget", "budget"), ("namespace", "shop")))] == 1  # no extra pass
    ledger.set(key, None)
    assert not scrape_text(generate_latest(metrics.registry(ledger)).decode())


def test_a_plan_whose_pods_were_not_asked_yet_has_no_applied_series():
    spec, _, reported = planned()
    got = by_name(metrics.samples("shop", "budget", spec, reported))
    assert metrics.BUDGET_PLAN_APPLIED not in {name for name, _ in got}
    assert not metrics.lagging(reported)


def test_an_overcommitted_plan_says_so():
    # 2 web pods x 4 workers + 2 worker pods need more client connections than 5
    spec, plan, reported = planned(max_client_conn=5)
    assert plan.overcommitted
    got = by_name(metrics.samples("shop", "budget", spec, reported))
    assert got[(metrics.BUDGET_OVERCOMMITTED, ("shop", "budget"))] == 1
    assert got[(metrics.BUDGET_READY, ("shop", "budget"))] == 1  # applied, at the smallest pools


def test_a_budget_that_cannot_be_planned_has_no_plan_series():
    spec, _, reported = planned()
    error = desired.SpecError("PgBouncerMissing", "PgBouncer Deployment 'pgbouncer' not found")
    invalid = status.invalid(error, error.reason, 4, reported, NOW)
    after = {**reported, **invalid}  # the merge patch keeps the old plan's numbers in status
    broken = {**spec, "database": {**spec["database"], "maxConnections": 50}}
    got = by_name(metrics.samples("shop", "budget", broken, after))
    budget = ("shop", "budget")
    assert got == {
        (metrics.BUDGET_CONNECTIONS, budget): 40,  # from the spec, not the stale status
        (metrics.BUDGET_READY, budget): 0,
        (metrics.BUDGET_PLAN_GENERATION, budget): 1,
    }
    assert not set(metrics.PLANNED_ONLY) & {name for name, _ in got}


def test_a_budget_without_status_yet_is_not_ready():
    got = by_name(metrics.samples("shop", "budget", SPEC, {}))
    assert got == {
        (metrics.BUDGET_CONNECTIONS, ("shop", "budget")): 90,
        (metrics.BUDGET_READY, ("shop", "budget")): 0,
    }


def scrape_text(text):
    """{(series, labels as a sorted tuple): value} from exposition text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_ledger_serves_every_budget_and_forgets_deleted_ones():
    ledger = metrics.Ledger()
    spec, plan, reported = planned()
    ledger.set(("shop", "budget"), metrics.samples("shop", "budget", spec, reported))
    ledger.set(("shop", "other"), metrics.samples("shop", "other", SPEC, {}))
    registry = metrics.registry(ledger)
    text = generate_latest(registry).decode()
    for series, (help_text, _) in metrics.SERIES.items():
        assert f"# HELP {series} {help_text}" in text
        assert f"# TYPE {series} gauge" in text
    got = scrape_text(text)
    web = (("budget", "budget"), ("consumer", "web"), ("namespace", "shop"))
    assert got[(metrics.CONSUMER_SERVER_POOL, web)] == plan.consumer("web").server_pool
    assert got[(metrics.BUDGET_READY, (("budget", "other"), ("namespace", "shop")))] == 0
    passes = f"{metrics.BUDGET_PASSES}_total"
    assert got[(passes, (("budget", "budget"), ("namespace", "shop")))] == 1
    ledger.set(("shop", "budget"), metrics.samples("shop", "budget", spec, reported))
    got = scrape_text(generate_latest(registry).decode())
    assert got[(passes, (("budget", "budget"), ("namespace", "shop")))] == 2
    ledger.set(("shop", "budget"), None)
    got = scrape_text(generate_latest(registry).decode())
    assert not [key for key in got if ("budget", "budget") in key[1]]
    assert got[(metrics.BUDGET_READY, (("budget", "other"), ("namespace", "shop")))] == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_endpoint_serves_the_ledger_over_http():
    ledger = metrics.Ledger()
    spec, plan, reported = planned()
    ledger.set(("shop", "budget"), metrics.samples("shop", "budget", spec, reported))
    port = free_port()
    server = metrics.serve(ledger, "127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    got = scrape_text(text)
    key = (metrics.BUDGET_SERVER_CONNECTIONS_PLANNED, (("budget", "budget"), ("namespace", "shop")))
    assert got[key] == plan.server_total
    assert not [name for name, _ in got if not name.startswith("poolwarden_")]


def test_series_names_and_labels_follow_the_contract():
    for series, (help_text, labels) in metrics.SERIES.items():
        assert series.startswith(("poolwarden_budget_", "poolwarden_consumer_")), series
        assert help_text and labels[:2] == ("namespace", "budget")
        if series == metrics.CONSUMER_SERVER_CONNECTIONS:
            assert labels == metrics.CONSUMER_STATE_LABELS
            continue
        assert labels == (
            metrics.CONSUMER_LABELS if series.startswith("poolwarden_consumer_")
            else metrics.BUDGET_LABELS
        )  # fmt: skip


def test_docs_list_every_series_with_its_labels():
    text = (ROOT / "docs" / "operator.md").read_text()
    every = {**metrics.SERIES, f"{metrics.BUDGET_PASSES}_total": ("", metrics.BUDGET_LABELS)}
    assert set(every) == set(metrics.EXPOSED)
    for series, (_, labels) in every.items():
        assert f"`{series}`" in text, f"docs/operator.md does not list {series}"
        row = next(line for line in text.splitlines() if f"`{series}`" in line)
        assert ", ".join(f"`{label}`" for label in labels) in row, row
    assert f"`{config.DEFAULT_METRICS_PORT}`" in text


@pytest.mark.parametrize(
    ("env", "port"),
    [({}, config.DEFAULT_METRICS_PORT), ({"POOLWARDEN_METRICS_PORT": "9400"}, 9400),
     ({"POOLWARDEN_METRICS_PORT": "0"}, 0)],
)  # fmt: skip
def test_metrics_port_setting(env, port):
    settings = config.Settings.from_env({"POOLWARDEN_NAMESPACE": "shop", **env})
    assert settings.metrics_port == port
    assert settings.metrics_host == "0.0.0.0"


@pytest.mark.parametrize("value", ["http", "70000", "-1", "8080"])
def test_a_bad_metrics_port_is_refused_by_name(value):
    with pytest.raises(config.ConfigError, match="POOLWARDEN_METRICS_PORT"):
        config.Settings.from_env({"POOLWARDEN_NAMESPACE": "shop", "POOLWARDEN_METRICS_PORT": value})


def test_the_operator_image_exposes_the_default_metrics_port():
    dockerfile = (ROOT / "operator" / "Dockerfile").read_text()
    exposed = next(line for line in dockerfile.splitlines() if line.startswith("EXPOSE"))
    assert str(config.DEFAULT_METRICS_PORT) in exposed.split()
    assert "prometheus-client" in dockerfile
