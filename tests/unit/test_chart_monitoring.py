"""The chart's monitoring side rendered by the real `helm`: exporters, scrape objects, rules.

- PgBouncer's exporter sidecar and the optional PostgreSQL exporter sidecar (custom queries from
  `files/postgres-exporter-queries.yaml`); offline, both come from the project's images of
  Debian's exporters (`exporters/*/Dockerfile`, built by `make images`).
- PodMonitors and a PrometheusRule only where the API serves them; the same rules as a plain
  ConfigMap; one source for the rule text (`files/prometheus-rules.yaml`).
The rules' behaviour is tested with promtool in tests/unit/test_prometheus_rules.py.
"""

from __future__ import annotations

import re

import pytest
import yaml
from test_chart_render import (
    CHART,
    FULL,
    HELM,
    NAMESPACE,
    PGBOUNCER,
    POSTGRESQL,
    ROOT,
    ci,
    container,
    env_of,
    render,
)

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not found at {HELM}")

EXPORTERS_ON = {"pgbouncer.metrics.enabled": "true", "postgresql.metrics.enabled": "true"}
QUERIES_CM = f"{FULL}-postgres-exporter"


def pod_spec(r, kind: str, name: str) -> dict:
    return r.get(kind, name)["spec"]["template"]["spec"]


def project_images() -> dict[str, str]:
    """PROJECT_IMAGES of mk/images.mk: image -> Dockerfile (what `make images` builds)."""
    text = (ROOT / "mk" / "images.mk").read_text()
    block = re.search(r"^PROJECT_IMAGES := (.*?)(?<!\\)\n", text, re.S | re.M).group(1)
    version = re.search(r"^VERSION\s+\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    pairs = block.replace("\\\n", " ").split()
    return dict(p.replace("$(VERSION)", version).split("=", 1) for p in pairs)


# --- exporters ---------------------------------------------------------------------------------


def test_postgresql_exporter_is_off_by_default():
    r = render()
    names = [c["name"] for c in pod_spec(r, "StatefulSet", POSTGRESQL)["containers"]]
    assert names == ["postgresql", "db-role"]
    assert QUERIES_CM not in r.names("ConfigMap")


def test_postgresql_exporter_runs_the_charts_queries_as_the_superuser_inside_the_pod():
    r = render(sets={"postgresql.metrics.enabled": "true"})
    spec = pod_spec(r, "StatefulSet", POSTGRESQL)
    metrics = container(spec, "metrics")
    assert metrics["image"] == "prometheuscommunity/postgres-exporter:v0.17.1"  # online default
    env = env_of(metrics)
    assert env["DATA_SOURCE_URI"]["value"].startswith("127.0.0.1:5432/")
    assert env["DATA_SOURCE_USER"]["value"] == "postgres"
    ref = env["DATA_SOURCE_PASS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{FULL}-db", "key": "postgres-password"}
    # the queries file is the chart's, verbatim, mounted where the argument points
    [mount] = metrics["volumeMounts"]
    assert f"--extend.query-path={mount['mountPath']}/queries.yaml" in metrics["args"]
    [vol] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    cm = r.get("ConfigMap", vol["configMap"]["name"])
    source = (CHART / "files" / "postgres-exporter-queries.yaml").read_text()
    assert yaml.safe_load(cm["data"]["queries.yaml"]) == yaml.safe_load(source)
    assert {"pg_role", "pg_client_connections"} <= set(yaml.safe_load(source))
    assert metrics["ports"] == [{"name": "metrics", "containerPort": 9187, "protocol": "TCP"}]
    # the superuser's password reaches no other pod than PostgreSQL's (unchanged by the exporter)
    for name, other in r.pod_specs():
        if name == POSTGRESQL:
            continue
        for c in other["containers"]:
            refs = [e.get("valueFrom", {}).get("secretKeyRef", {}) for e in c.get("env", [])]
            assert {"name": f"{FULL}-db", "key": "postgres-password"} not in refs, (name, c["name"])
    # PostgreSQL's NetworkPolicy opens the exporter's port, and still only PgBouncer on 5432
    policy = r.get("NetworkPolicy", POSTGRESQL)["spec"]
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["ingress"]}
    assert set(by_port) == {"postgresql", "metrics"}
    assert "from" in by_port["postgresql"]


def test_the_postgresql_exporter_needs_the_charts_postgresql():
    r = render(
        sets={
            "postgresql.metrics.enabled": "true",
            "postgresql.enabled": "false",
            "externalDatabase.host": "db.example.internal",
            "externalDatabase.password": "given",
        }
    )
    assert QUERIES_CM not in r.names("ConfigMap")
    assert r.of_kind("StatefulSet") == []


def test_offline_exporters_are_the_projects_images_of_debians_exporters():
    r = render(ci("offline"), sets=EXPORTERS_ON)
    pgb = container(pod_spec(r, "Deployment", PGBOUNCER), "metrics")
    pg = container(pod_spec(r, "StatefulSet", POSTGRESQL), "metrics")
    assert pgb["image"] == "poolwarden/pgbouncer-exporter:0.1.0"
    assert pg["image"] == "poolwarden/postgres-exporter:0.1.0"
    assert pgb["imagePullPolicy"] == pg["imagePullPolicy"] == "Never"
    # every image of the offline release is one `make images` builds, from a Dockerfile here
    built = project_images()
    for name, spec in r.pod_specs():
        for c in spec["containers"]:
            assert c["image"] in built, (name, c["name"], c["image"], sorted(built))
            assert (ROOT / built[c["image"]]).is_file(), built[c["image"]]
    for image in ("poolwarden/pgbouncer-exporter:0.1.0", "poolwarden/postgres-exporter:0.1.0"):
        dockerfile = (ROOT / built[image]).read_text()
        assert re.search(r"^FROM debian:trixie-slim$", dockerfile, re.M), image
        assert "apt-get download prometheus-" in dockerfile, image  # Debian's package


def test_the_online_default_stays_the_official_pgbouncer_exporter():
    r = render(ci("metrics"))
    pgb = container(pod_spec(r, "Deployment", PGBOUNCER), "metrics")
    assert pgb["image"] == "prometheuscommunity/pgbouncer-exporter:v0.10.2"
    assert NAMESPACE == r.get("Deployment", PGBOUNCER)["metadata"]["namespace"]


# --- PodMonitors, PrometheusRule, rules ConfigMap -------------------------------------------------

MONITORING_API = ["monitoring.coreos.com/v1/PodMonitor", "monitoring.coreos.com/v1/PrometheusRule"]
RULES_CM = f"{FULL}-prometheus-rules"
ALL_ALERTS = {
    "PoolwardenBudgetNearlyUsed",
    "PoolwardenBudgetOvercommitted",
    "PoolwardenBudgetNotReady",
    "PoolwardenPlanNotApplied",
    "PoolwardenClientsWaiting",
    "PoolwardenBackstopMissing",
}


def render_api(*values_files, sets=None, api=MONITORING_API):
    """`helm template` as against a cluster that serves the given API kinds."""
    extra = [a for kind in api for a in ("--api-versions", kind)]
    return render(*values_files, sets=sets, extra_args=extra)


def rules_of(r) -> dict:
    return yaml.safe_load(r.get("ConfigMap", RULES_CM)["data"]["poolwarden.rules.yaml"])


def alerts(rules: dict) -> dict[str, dict]:
    return {rule["alert"]: rule for g in rules["groups"] for rule in g["rules"]}


@pytest.mark.parametrize("values", [None, "metrics"])
def test_no_monitoring_objects_where_the_api_does_not_serve_them(values):
    r = render(*([ci(values)] if values else []))
    assert r.of_kind("PodMonitor") == [] and r.of_kind("PrometheusRule") == []
    # the plain ConfigMap is opt-in (ci/metrics-values.yaml opts in), whatever the API serves
    assert (RULES_CM in r.names("ConfigMap")) is (values == "metrics")
    # the group version alone is not enough: the kinds themselves must be served
    r = render_api(ci("metrics"), api=["monitoring.coreos.com/v1"])
    assert r.of_kind("PodMonitor") == [] and r.of_kind("PrometheusRule") == []


def test_podmonitors_select_their_components_pods_and_scrape_a_port_they_expose():
    r = render_api(ci("metrics"))
    monitors = {m["metadata"]["name"]: m for m in r.of_kind("PodMonitor")}
    assert set(monitors) == {PGBOUNCER, POSTGRESQL, f"{FULL}-operator"}
    workloads = {
        d["metadata"]["name"]: d for d in r.docs if d["kind"] in ("Deployment", "StatefulSet")
    }
    for name, monitor in monitors.items():
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        selected = [
            w
            for w, d in workloads.items()
            if all(
                d["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in spec["selector"]["matchLabels"].items()
            )
        ]
        assert selected == [name], (name, selected)
        [endpoint] = spec["podMetricsEndpoints"]
        assert endpoint["port"] == "metrics" and endpoint["interval"] == "30s"
        # the operator's series carry the budget's namespace label: it must win over the target's
        assert endpoint["honorLabels"] is (name == f"{FULL}-operator")
        if name == f"{FULL}-operator":
            continue  # the operator's metrics port is the operator's (docs/monitoring.md)
        ports = [
            p["name"]
            for c in workloads[name]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        ]
        assert "metrics" in ports, (name, ports)
    # without the exporters only the operator is scraped; podMonitors.enabled=false: none
    only = render_api(sets={"pgbouncer.metrics.enabled": "false"}).of_kind("PodMonitor")
    assert [m["metadata"]["name"] for m in only] == [f"{FULL}-operator"]
    # by default PgBouncer exports (the operator reads it): its pods are scraped too
    default = render_api().of_kind("PodMonitor")
    assert [m["metadata"]["name"] for m in default] == [f"{FULL}-pgbouncer", f"{FULL}-operator"]
    off = render_api(ci("metrics"), sets={"monitoring.podMonitors.enabled": "false"})
    assert off.of_kind("PodMonitor") == [] and off.of_kind("PrometheusRule")


def test_prometheusrule_and_configmap_carry_the_same_rules_from_one_source():
    r = render_api(ci("metrics"), sets={"monitoring.rulesConfigMap.enabled": "true"})
    [rule] = r.of_kind("PrometheusRule")
    assert rule["spec"] == rules_of(r)
    assert set(alerts(rules_of(r))) == ALL_ALERTS
    # the rule text lives in files/prometheus-rules.yaml only: no template spells an alert
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            assert "alert:" not in template.read_text(), template
    # without the API the ConfigMap alone, with the same rules
    plain = render(ci("metrics"), sets={"monitoring.rulesConfigMap.enabled": "true"})
    assert rules_of(plain) == rule["spec"]


def test_alerts_follow_what_the_release_exports():
    on = {"monitoring.rulesConfigMap.enabled": "true"}
    # by default the operator and PgBouncer's exporter serve series, PostgreSQL's does not
    assert set(alerts(rules_of(render(sets=on)))) == ALL_ALERTS - {"PoolwardenBackstopMissing"}
    assert set(alerts(rules_of(render(sets={**on, "pgbouncer.metrics.enabled": "false"})))) == {
        "PoolwardenBudgetOvercommitted",
        "PoolwardenBudgetNotReady",
        "PoolwardenPlanNotApplied",
    }
    # the operator serving no series: none of its alerts
    r = render(sets={**on, "operator.metrics.enabled": "false",
                     "pgbouncer.metrics.enabled": "true"})
    assert set(alerts(rules_of(r))) == {"PoolwardenClientsWaiting"}
    r = render(sets={**on, "pgbouncer.metrics.enabled": "true"})
    assert set(alerts(rules_of(r))) == ALL_ALERTS - {"PoolwardenBackstopMissing"}
    r = render(sets={**on, "postgresql.metrics.enabled": "true", "operator.enabled": "false",
                     "pgbouncer.metrics.enabled": "false"})
    assert set(alerts(rules_of(r))) == {"PoolwardenBackstopMissing"}
    # nothing to alert on: no empty rule objects
    r = render_api(sets={**on, "operator.enabled": "false", "pgbouncer.metrics.enabled": "false"})
    assert RULES_CM not in r.names("ConfigMap") and r.of_kind("PrometheusRule") == []


def test_thresholds_and_labels_come_from_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["rules"]
    keys = {
        "PoolwardenBudgetNearlyUsed": "budgetNearlyUsed",
        "PoolwardenBudgetOvercommitted": "overcommitted",
        "PoolwardenBudgetNotReady": "notReady",
        "PoolwardenPlanNotApplied": "notApplied",
        "PoolwardenClientsWaiting": "clientsWaiting",
        "PoolwardenBackstopMissing": "backstopMissing",
    }
    on = {"monitoring.rulesConfigMap.enabled": "true"}
    got = alerts(rules_of(render(ci("metrics"), sets=on)))
    for alert, key in keys.items():
        assert got[alert]["for"] == values[key]["for"], alert
        assert got[alert]["labels"] == {
            "severity": values[key]["severity"],
            "namespace": NAMESPACE,
            "budget": FULL,
        }
    changed = alerts(
        rules_of(
            render(
                ci("metrics"),
                sets={
                    "monitoring.rulesConfigMap.enabled": "true",
                    "monitoring.rules.budgetNearlyUsed.for": "7m",
                    "monitoring.rules.overcommitted.severity": "page",
                    "monitoring.rules.additionalLabels.team": "db",
                    "monitoring.rules.additionalLabels.namespace": "not-this-one",
                },
            )
        )
    )
    assert changed["PoolwardenBudgetNearlyUsed"]["for"] == "7m"
    assert changed["PoolwardenBudgetOvercommitted"]["labels"]["severity"] == "page"
    assert all(a["labels"]["team"] == "db" for a in changed.values())
    assert all(a["labels"]["namespace"] == NAMESPACE for a in changed.values())


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ({"monitoring.rules.budgetNearlyUsed.ratio": "1.5"}, r"budgetNearlyUsed\.ratio"),
        ({"monitoring.rules.budgetNearlyUsed.ratio": "0"}, r"budgetNearlyUsed\.ratio"),
        ({"monitoring.rules.clientsWaiting.above": "-1"}, r"clientsWaiting\.above"),
        ({"monitoring.rules.overcommitted.for": "1 minute"}, r"overcommitted\.for"),
        ({"monitoring.rules.overcommitted.for": "30s1m"}, r"overcommitted\.for"),  # units in order
        ({"monitoring.rules.overcommitted.for": ""}, r"overcommitted\.for"),
        ({"monitoring.podMonitors.interval": "often"}, r"podMonitors\.interval"),
        ({"monitoring.rules.notReady.severity": "Very Bad"}, r"notReady\.severity"),
        ({"monitoring.rules.backstopMissing.after": "1m"}, r"after.*(not allowed|Additional)"),
    ],
)
def test_schema_rejects_bad_thresholds_naming_the_key(sets, expected):
    from test_chart_render import render_error

    assert re.search(expected, render_error(sets=sets)), expected


def test_the_pgbouncer_exporter_starts_only_once_pgbouncer_listens():
    """The exporter exits when PgBouncer does not answer (Debian's 0.10.2: `error pinging
    pgbouncer`), which restarted it once in every new pod: the kubelet starts containers in
    order and the next only after a postStart hook returns, so PgBouncer's hook waits for it."""
    r = render(sets={"pgbouncer.metrics.enabled": "true"})
    spec = pod_spec(r, "Deployment", PGBOUNCER)
    assert [c["name"] for c in spec["containers"]] == ["pgbouncer", "metrics"]
    pgbouncer = spec["containers"][0]
    script = " ".join(pgbouncer["lifecycle"]["postStart"]["exec"]["command"])
    assert 'pg_isready -q -h 127.0.0.1 -p "$PGBOUNCER_LISTEN_PORT"' in script
    assert "exit 0" in script.rsplit(";", 1)[-1]  # a PgBouncer that never listens is the probes'
    assert "PGBOUNCER_LISTEN_PORT" in env_of(pgbouncer)
    off = render(sets={"pgbouncer.metrics.enabled": "false"})
    assert "lifecycle" not in container(pod_spec(off, "Deployment", PGBOUNCER), "pgbouncer")
