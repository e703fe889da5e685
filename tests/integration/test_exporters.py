"""Debian's exporters, as the chart runs them, against the real PostgreSQL 17 and PgBouncer 1.24.

The PgBouncer exporter and the PostgreSQL exporter come from the trixie root (packages
prometheus-pgbouncer-exporter and prometheus-postgres-exporter, the binaries of the offline
images) and get the arguments, the connection settings and the custom queries the chart renders
(`helm template` with ci/metrics-values.yaml). The test scrapes them and checks that every
exporter series the chart's alerting rules read exists with the labels the rules select on, and
that the values mean what the rules assume: clients waiting in PgBouncer while its only server
connection is busy, the app role's CONNECTION LIMIT = the budget, connections by
application_name and state.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import devstack
import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HELM = Path(os.environ.get("HELM", REPO / ".tools" / "bin" / "helm"))
CHART = REPO / "charts" / "poolwarden"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not found at {HELM}")

SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def chart() -> list[dict]:
    out = subprocess.run(
        [str(HELM), "template", "pw", str(CHART), "-n", "shop",
         "-f", str(CHART / "ci" / "metrics-values.yaml"),
         "--set", "monitoring.rulesConfigMap.enabled=true"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def obj(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def metrics_container(docs: list[dict], kind: str, name: str) -> dict:
    spec = obj(docs, kind, name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "metrics")


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def rule_series(docs: list[dict]) -> set[str]:
    """Exporter series the rules read: names before `{`, and a regex name's alternatives."""
    rules = yaml.safe_load(obj(docs, "ConfigMap", "pw-poolwarden-prometheus-rules")["data"]
                           ["poolwarden.rules.yaml"])
    names = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            for regex in re.findall(r'__name__=~"([^"]+)"', expr):
                parts = re.fullmatch(r"(\w*)\(([\w|]+)\)(\w*)", regex)
                prefix, alternatives, suffix = parts.groups()
                names |= {prefix + a + suffix for a in alternatives.split("|")}
            names |= set(re.findall(r"([a-zA-Z_:][\w:]*)\{", expr))
    return {n for n in names if not n.startswith("poolwarden_")}


def wait_scrape(port: int, want, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    samples = []
    while time.monotonic() < deadline:
        try:
            samples = scrape(port)
            if want(samples):
                return samples
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what}: not seen in {timeout} s; last scrape: {samples[:50]}")


def test_debians_exporters_export_what_the_rules_read(stack, start_bouncer):
    docs = chart()
    used = rule_series(docs)
    assert {"pgbouncer_pools_client_waiting_connections", "pg_role_connection_limit"} <= used

    # a PgBouncer with one server connection, so that clients queue behind it
    bouncer = start_bouncer(PGBOUNCER_DEFAULT_POOL_SIZE="1", PGBOUNCER_MAX_DB_CONNECTIONS="1",
                            PGBOUNCER_RESERVE_POOL_SIZE="0")

    # the PgBouncer exporter: the chart's arguments and connection string, ports of this stack
    pgb = metrics_container(docs, "Deployment", "pw-poolwarden-pgbouncer")
    pgb_port = devstack.free_port()
    conn = {e["name"]: e for e in pgb["env"]}["PGBOUNCER_EXPORTER_CONNECTION_STRING"]["value"]
    conn = conn.replace("$(PGBOUNCER_STATS_PASSWORD)", stack.stats_password)
    conn = conn.replace("127.0.0.1:6432/", f"127.0.0.1:{bouncer.port}/")
    args = [a.replace("--web.listen-address=:9127", f"--web.listen-address=127.0.0.1:{pgb_port}")
            for a in pgb["args"]]
    assert args != pgb["args"]
    os.environ["PGBOUNCER_EXPORTER_CONNECTION_STRING"] = conn  # chroot-run passes PG* through
    try:
        stack._spawn("pgbouncer-exporter",
                     stack.chroot_cmd("prometheus-pgbouncer-exporter", *args))
    finally:
        del os.environ["PGBOUNCER_EXPORTER_CONNECTION_STRING"]

    # the PostgreSQL exporter: the chart's arguments, its queries file, the superuser over TCP
    pg = metrics_container(docs, "StatefulSet", "pw-poolwarden-postgresql")
    queries = obj(docs, "ConfigMap", "pw-poolwarden-postgres-exporter")["data"]["queries.yaml"]
    qdir = stack.state / "postgres-exporter"
    qdir.mkdir(exist_ok=True)
    (qdir / "queries.yaml").write_text(queries)
    pg_port = devstack.free_port()
    pg_args = []
    for a in pg["args"]:
        if a.startswith("--web.listen-address="):
            a = f"--web.listen-address=127.0.0.1:{pg_port}"
        elif a.startswith("--extend.query-path="):
            a = "--extend.query-path=/mnt/state/postgres-exporter/queries.yaml"
        pg_args.append(a)
    env = {e["name"]: e.get("value") for e in pg["env"]}
    uri = env["DATA_SOURCE_URI"].replace("127.0.0.1:5432/", f"127.0.0.1:{stack.pg_port}/")
    dsn = f"postgresql://{env['DATA_SOURCE_USER']}:{stack.superuser_password}@{uri}"
    stack._spawn("postgres-exporter", stack.chroot_cmd(
        "env", f"DATA_SOURCE_NAME={dsn}", "prometheus-postgres-exporter", *pg_args))

    # load: 3 clients of one server connection (2 wait), and named idle connections on PostgreSQL
    def sleeper():
        with psycopg.connect(f"postgresql://{devstack.APP_USER}:{stack.app_password}"
                             f"@127.0.0.1:{bouncer.port}/{devstack.APP_DB}",
                             connect_timeout=10) as c:
            c.execute("SELECT pg_sleep(10)")

    threads = [threading.Thread(target=sleeper) for _ in range(3)]
    named = [psycopg.connect(stack.dsn(via_bouncer=False), application_name="exporter-check",
                             connect_timeout=10) for _ in range(2)]
    try:
        for t in threads:
            t.start()

        def waiting(samples):
            return sum(v for n, labels, v in samples
                       if n == "pgbouncer_pools_client_waiting_connections"
                       and labels.get("database") == devstack.APP_DB) == 2

        pgb_samples = wait_scrape(pgb_port, waiting, "2 clients waiting in PgBouncer")
        pg_samples = wait_scrape(
            pg_port,
            lambda s: any(n == "pg_client_connections_count"
                          and labels.get("application_name") == "exporter-check"
                          for n, labels, _ in s),
            "connections by application_name",
        )
    finally:
        for t in threads:
            t.join(timeout=60)
        for c in named:
            c.close()
        stack.stop_one("pgbouncer-exporter")
        stack.stop_one("postgres-exporter")

    scraped = {n for n, _, _ in pgb_samples} | {n for n, _, _ in pg_samples}
    missing = used - scraped
    assert not missing, f"series the rules read that the exporters do not export: {sorted(missing)}"

    # PgBouncer: one server connection busy for the pool the clients queue on
    servers = {n: v for n, labels, v in pgb_samples
               if n.startswith("pgbouncer_pools_server_")
               and labels.get("database") == devstack.APP_DB}
    assert servers["pgbouncer_pools_server_active_connections"] == 1, servers
    # PostgreSQL: the app role's limit is the budget, no superuser; the named connections, idle
    role = {n: v for n, labels, v in pg_samples
            if n.startswith("pg_role_") and labels.get("rolname") == devstack.APP_USER}
    assert role == {"pg_role_connection_limit": stack.connection_limit, "pg_role_superuser": 0}
    named_rows = [(labels["usename"], labels["state"], v) for n, labels, v in pg_samples
                  if n == "pg_client_connections_count"
                  and labels.get("application_name") == "exporter-check"]
    assert named_rows == [(devstack.APP_USER, "idle", 2)], named_rows
    su = [v for n, labels, v in pg_samples
          if n == "pg_role_superuser" and labels["rolname"] == "postgres"]
    assert su == [1]
