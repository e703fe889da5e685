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
