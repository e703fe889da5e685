"""A real Prometheus (Debian's, in an image built from the local debian:trixie-slim) scrapes a
release with both exporters and evaluates the chart's own rules (the rules ConfigMap): the
series the rules read arrive with the labels they select on, nothing fires at rest, and
PoolwardenBackstopMissing fires when the app role loses its CONNECTION LIMIT and resolves when
the db-role sidecar restores it. With the operator's metrics port in the release,
PoolwardenBudgetOvercommitted fires when the budget is made overcommitted. One shared release;
each phase prints its duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import Release, restarts, wait_for
from releases import explained, make_release, note  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

PROMETHEUS_IMAGE = "poolwarden/e2e-prometheus:0.1.0"
PROMETHEUS = "e2e-prometheus"
FAST_RULES = {  # the rules' thresholds stay the chart's; only the waits are short for a test
    "backstopMissing": {"for": "0s"},
    "overcommitted": {"for": "0s"},
    "clientsWaiting": {"for": "30s"},
}


def prometheus_objects(namespace: str, rules_configmap: str) -> list[dict[str, Any]]:
    config = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": ["/etc/prometheus/rules/poolwarden.rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "poolwarden-pods",
                # the operator's series carry the budget's own namespace label
                "honor_labels": True,
                "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
                "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_pod_container_port_name"],
                     "regex": "metrics", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }
    meta = {"name": PROMETHEUS, "labels": {"app.kubernetes.io/part-of": "poolwarden-e2e"}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROMETHEUS},
         "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS, "namespace": namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"prometheus.yml": yaml.safe_dump(config)}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": {"app": PROMETHEUS}, "ports": [{"name": "web", "port": 9090}]}},
        {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {**meta, "labels": {**meta["labels"], "app": PROMETHEUS}},
            "spec": {
                "serviceAccountName": PROMETHEUS,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "prometheus",
                    "image": PROMETHEUS_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": ["--config.file=/etc/prometheus/prometheus.yml",
                             "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"],
                    "ports": [{"name": "web", "containerPort": 9090}],
                    "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"},
                                       "periodSeconds": 2},
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                  "limits": {"memory": "512Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
                        {"name": "rules", "mountPath": "/etc/prometheus/rules", "readOnly": True},
                        {"name": "data", "mountPath": "/prometheus"},
                    ],
                }],
                "volumes": [
                    {"name": "config", "configMap": {"name": PROMETHEUS}},
                    {"name": "rules", "configMap": {"name": rules_configmap}},
                    {"name": "data", "emptyDir": {}},
                ],
            },
        },
    ]


class Prom:
    """Prometheus' HTTP API through the API server's service proxy (no port-forward)."""

    def __init__(self, release: Release):
        self.release = release
        self.base = (f"/api/v1/namespaces/{release.namespace}/services/"
                     f"http:{PROMETHEUS}:web/proxy/api/v1")

    def get(self, path: str) -> Any:
        out = self.release.cluster.kubectl("get", "--raw", f"{self.base}/{path}", timeout=30)
        body = json.loads(out.stdout)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.get("query?" + urllib.parse.urlencode({"query": promql}))["result"]

    def firing(self, alert: str) -> list[dict[str, Any]]:
        ns = self.release.namespace
        return self.query(f'ALERTS{{alertname="{alert}", alertstate="firing", namespace="{ns}"}}')


@pytest.fixture(scope="module")
def prometheus_image(cluster) -> str:
    start = time.monotonic()
    subprocess.run(
        ["docker", "build", "-q", "-t", PROMETHEUS_IMAGE,
         str(Path(__file__).parent / "prometheus-image")],
        check=True, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, DOCKER_BUILDKIT="0"),
    )
    cluster.load_image(PROMETHEUS_IMAGE)
    note(f"monitoring: Prometheus image built and loaded in {time.monotonic() - start:.0f} s")
    return PROMETHEUS_IMAGE


def connect_through_pgbouncer(release: Release, pod: str) -> None:
    """One query as the consumers' role through that PgBouncer pod, from inside it."""
    script = (
        'PGPASSWORD="$PGBOUNCER_DB_PASSWORD" psql -X -q -At -h 127.0.0.1 '
        '-p "${PGBOUNCER_LISTEN_PORT:-6432}" -U "$PGBOUNCER_DB_USER" -d "$PGBOUNCER_DB_NAME" '
        '-c "SELECT 1"'
    )
    result = release.kubectl("exec", pod, "-c", "pgbouncer", "--", "sh", "-c", script, timeout=30)
    assert result.stdout.strip() == "1", result


@pytest.fixture(scope="module")
def monitored(make_release, prometheus_image) -> Iterator[tuple[Release, Prom]]:  # noqa: F811
    start = time.monotonic()
    release = make_release(
        "pw",
        pgbouncer={"metrics": {"enabled": True}},
        postgresql={"metrics": {"enabled": True}},
        monitoring={"rulesConfigMap": {"enabled": True}, "rules": FAST_RULES},
    )
    rules = f"{release.fullname}-prometheus-rules"
    release.cluster.apply(release.namespace, *prometheus_objects(release.namespace, rules))
    release.cluster.wait_pod_phase(release.namespace, PROMETHEUS, "Running", timeout=180)
    prom = Prom(release)
    wait_for("Prometheus ready", lambda: prom.get("status/runtimeinfo"), timeout=120, interval=2)
    note(f"monitoring: release + Prometheus up in {time.monotonic() - start:.0f} s")
    yield release, prom


def test_prometheus_scrapes_the_series_the_rules_read(monitored):
    release, prom = monitored
    ns = release.namespace
    start = time.monotonic()
    with explained(release):
        groups = prom.get("rules")["groups"]
        alerts = {r["name"] for g in groups for r in g["rules"]}
        assert {"PoolwardenClientsWaiting", "PoolwardenBackstopMissing"} <= alerts, alerts
        pods = wait_for(
            "both PgBouncer pods scraped",
            lambda: (lambda r: r if len(r) == 2 else None)(
                prom.query(f'count by (pod) (pgbouncer_pools_client_waiting_connections'
                           f'{{namespace="{ns}", pod=~"{release.pgbouncer}-.+"}})')),
            timeout=120, interval=3,
        )
        assert len(pods) == 2
        # the exporter sidecar starts after PgBouncer listens: it exited (a restart of every
        # new pod) when it started first
        assert {p["metadata"]["name"]: restarts(p) for p in release.pods("pgbouncer")} == {
            p["metadata"]["name"]: 0 for p in release.pods("pgbouncer")}
        role = release.consumer_role()
        limit = wait_for(
            "the app role's CONNECTION LIMIT scraped",
            lambda: prom.query(f'pg_role_connection_limit{{namespace="{ns}", rolname="{role}"}}')
            or None,
            timeout=120, interval=3,
        )
        values = release.values
        budget = values["postgresql"]["maxConnections"] - values["budget"]["reserved"]
        assert [float(s["value"][1]) for s in limit] == [budget]
        # the series has a row only while the role holds a connection: open one through
        # PgBouncer (it keeps the server connection idle), then wait for the next scrape
        connect_through_pgbouncer(release, pods[0]["metric"]["pod"])
        wait_for(
            "the app role's connections scraped",
            lambda: prom.query(
                f'pg_client_connections_count{{namespace="{ns}", usename="{role}"}}') or None,
            timeout=60, interval=3,
        )
        # at rest nothing of this release fires
        assert prom.query(f'ALERTS{{alertstate="firing", namespace="{ns}"}}') == []
    note(f"monitoring: series scraped in {time.monotonic() - start:.0f} s")


def test_backstop_missing_fires_and_resolves_after_the_db_role_repair(monitored):
    release, prom = monitored
    role = release.consumer_role()
    start = time.monotonic()
    with explained(release):
        def removed_and_firing():
            release.psql(f'ALTER ROLE "{role}" CONNECTION LIMIT -1;')  # the sidecar repairs it
            return prom.firing("PoolwardenBackstopMissing") or None

        [alert] = wait_for("PoolwardenBackstopMissing firing", removed_and_firing,
                           timeout=120, interval=2)
        fired = time.monotonic() - start
        assert alert["metric"]["severity"] == "critical"
        wait_for("PoolwardenBackstopMissing resolved by the db-role sidecar",
                 lambda: prom.firing("PoolwardenBackstopMissing") == [], timeout=120, interval=3)
    note(f"monitoring: backstop alert fired {fired:.0f} s after the limit was removed, "
         f"resolved {time.monotonic() - start - fired:.0f} s later")


def test_overcommitted_budget_fires(monitored):
    release, prom = monitored
    operator = release.get("deployment", release.operator)["spec"]["template"]["spec"]
    ports = [p.get("name") for c in operator["containers"] for p in c.get("ports", [])]
    assert "metrics" in ports, ports  # the operator's series (operator.metrics, on by default)
    start = time.monotonic()
    with explained(release):
        series = f'poolwarden_budget_connections{{namespace="{release.namespace}"}}'
        wait_for("the operator's series scraped", lambda: prom.query(series) or None,
                 timeout=120, interval=3)
        release.kubectl("patch", "connectionbudget", release.budget, "--type", "merge",
                        "-p", '{"spec": {"pgbouncer": {"maxClientConn": 1}}}')
        [alert] = wait_for("PoolwardenBudgetOvercommitted firing",
                           lambda: prom.firing("PoolwardenBudgetOvercommitted") or None,
                           timeout=180, interval=3)
        assert alert["metric"]["budget"] == release.budget
    note(f"monitoring: overcommitted alert fired {time.monotonic() - start:.0f} s after the patch")
