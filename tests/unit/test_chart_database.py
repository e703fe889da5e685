"""The chart's database side rendered by the real `helm`: the role that enforces the budget.

- The chart's PostgreSQL runs as the image's superuser `postgres` with its own password; a
  `db-role` sidecar (same image, files/db-role.sh from a ConfigMap) keeps the app's role
  NOSUPERUSER with CONNECTION LIMIT = the budget, read from a mounted role.conf so a
  `helm upgrade` of the budget changes the ConfigMap and never the pod template.
- An external database gets a post-install/post-upgrade Job that checks the role with the app's
  own credentials.
- existingSecret for every password makes renders reproducible (helm template / Argo CD).
- Values that reach pgbouncer.ini are pattern-checked by the schema.
"""

from __future__ import annotations

import base64
import json

import pytest
from test_chart_render import (
    FULL,
    HELM,
    POSTGRESQL,
    container,
    env_of,
    helm,
    render,
    render_error,
    template_args,
)

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"helm not found at {HELM}")

ROLE_CM = f"{FULL}-db-role"
CHECK_JOB = f"{FULL}-db-role-check"
EXTERNAL = {
    "postgresql.enabled": "false",
    "externalDatabase.host": "db.example.internal",
    "externalDatabase.password": "given",
    "externalDatabase.maxConnections": "200",
}


def role_conf(r) -> dict[str, str]:
    text = r.get("ConfigMap", ROLE_CM)["data"]["role.conf"]
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def pg_spec(r) -> dict:
    return r.get("StatefulSet", POSTGRESQL)["spec"]["template"]["spec"]


def test_the_sidecar_keeps_the_app_role_at_the_budget_from_a_mounted_file():
    r = render()
    spec = pg_spec(r)
    sidecar = container(spec, "db-role")
    server = container(spec, "postgresql")
    assert sidecar["image"] == server["image"]  # bash + psql of the server's own image
    assert sidecar["command"] == ["bash", "/etc/poolwarden/db-role/db-role.sh", "ensure"]
    assert sidecar["readinessProbe"]["exec"]["command"][-1] == "ready"
    # the wanted state is a mounted file, not env: an upgrade re-applies without a restart
    env = env_of(sidecar)
    assert env["PGROLE_CONFIG"]["value"] == "/etc/poolwarden/db-role/role.conf"
    assert env["PGUSER"]["value"] == "postgres" and env["PGHOST"]["value"] == "127.0.0.1"
    assert not any("configMapKeyRef" in e.get("valueFrom", {}) for e in env.values())
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert volumes[mounts["/etc/poolwarden/db-role"]]["configMap"]["name"] == ROLE_CM
    assert all("subPath" not in m for m in sidecar["volumeMounts"])
    secret = volumes[mounts["/etc/poolwarden/db-secret"]]["secret"]
    assert secret["secretName"] == f"{FULL}-db"
    assert {i["path"]: i["key"] for i in secret["items"]} == {
        "password": "password",
        "postgres-password": "postgres-password",
    }
    # the script is the chart's file, and the limit is the budget: 100 - 10
    data = r.get("ConfigMap", ROLE_CM)["data"]
    assert data["db-role.sh"].startswith("#!/usr/bin/env bash")
    assert role_conf(r) == {
        "role": "poolwarden",
        "database": "poolwarden",
        "connection_limit": "90",
        "idle_in_transaction_session_timeout": "60",
    }
    # no hook Job for the chart's PostgreSQL (the control-plane tier has no kubelet)
    assert r.of_kind("Job") == []


def test_the_limit_follows_the_budget_and_the_pod_template_does_not_change():
    base = render()
    raised = render(
        sets={"budget.reserved": "25", "postgresql.idleInTransactionSessionTimeoutSeconds": "0"}
    )
    assert role_conf(raised)["connection_limit"] == "75"
    assert role_conf(raised)["idle_in_transaction_session_timeout"] == "0"
    assert pg_spec(raised) == pg_spec(base)
    assert (
        raised.get("StatefulSet", POSTGRESQL)["spec"]["template"]
        == base.get("StatefulSet", POSTGRESQL)["spec"]["template"]
    )
    bigger = render(sets={"postgresql.maxConnections": "300"})
    assert role_conf(bigger)["connection_limit"] == "290"


def test_the_superuser_password_is_separate_and_the_app_never_sees_it():
    r = render(
        sets={"postgresql.auth.password": "app-pw", "postgresql.auth.postgresPassword": "su-pw"}
    )
    data = {
        k: base64.b64decode(v).decode() for k, v in r.get("Secret", f"{FULL}-db")["data"].items()
    }
    assert data == {"password": "app-pw", "postgres-password": "su-pw"}
    env = env_of(container(pg_spec(r), "postgresql"))
    assert env["POSTGRES_USER"]["value"] == "postgres"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-password"
    generated = render().get("Secret", f"{FULL}-db")["data"]
    assert generated["password"] != generated["postgres-password"]
    # only the PostgreSQL pod refers to the superuser's key
    for name, spec in r.pod_specs():
        refs = json.dumps(spec)
        if name != POSTGRESQL:
            assert "postgres-password" not in refs, name
    err = render_error(sets={"postgresql.auth.username": "postgres"})
    assert "postgresql.auth.username must not be postgres: that is the image's superuser" in err


def test_existing_secrets_make_two_renders_byte_identical():
    sets = {
        "postgresql.auth.existingSecret": "shop-db",
        "postgresql.auth.existingSecretPasswordKey": "app",
        "postgresql.auth.existingSecretPostgresPasswordKey": "admin",
        "pgbouncer.existingSecret": "shop-pgbouncer",
    }
    first = helm(*template_args(sets=sets)).stdout
    second = helm(*template_args(sets=sets)).stdout
    assert first == second
    # without them, generated passwords differ on every render (lookup finds no cluster)
    assert helm(*template_args()).stdout != helm(*template_args()).stdout
    r = render(sets=sets)
    assert r.of_kind("Secret") == []
    spec = pg_spec(r)
    env = env_of(container(spec, "postgresql"))
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "shop-db",
        "key": "admin",
    }
    secret = next(v["secret"] for v in spec["volumes"] if v["name"] == "db-secret")
    assert secret["secretName"] == "shop-db"
    assert {i["path"]: i["key"] for i in secret["items"]} == {
        "password": "app",
        "postgres-password": "admin",
    }
    for name, spec in r.pod_specs():
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and e["name"].endswith("DB_PASSWORD"):
                    assert ref == {"name": "shop-db", "key": "app"}, (name, e)
                elif ref:
                    assert ref["name"] in ("shop-db", "shop-pgbouncer"), (name, e)


def test_external_database_gets_a_check_job_with_the_apps_credentials():
    r = render(sets=EXTERNAL)
    assert r.of_kind("StatefulSet") == []
    [job] = r.of_kind("Job")
    assert job["metadata"]["name"] == CHECK_JOB
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    spec = job["spec"]["template"]["spec"]
    [c] = spec["containers"]
    assert c["command"][-1] == "check"
    assert c["image"] == "poolwarden/pgbouncer:0.1.0"  # ships psql
    env = env_of(c)
    assert env["PGHOST"]["value"] == "db.example.internal"
    assert env["PGUSER"]["value"] == "poolwarden"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULL}-db",
        "key": "password",
    }
    assert role_conf(r) == {
        "role": "poolwarden",
        "database": "poolwarden",
        "connection_limit": "190",
    }
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # the chart's Secret for an external database holds no superuser password
    assert set(r.get("Secret", f"{FULL}-db")["data"]) == {"password"}
    off = render(sets={**EXTERNAL, "externalDatabase.checkRoleLimit": "false"})
    assert off.of_kind("Job") == [] and ROLE_CM not in off.names("ConfigMap")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("externalDatabase.host", "db max_db_connections=0 pool_size=500"),
        ("externalDatabase.host", "db\\,x"),
        ("externalDatabase.database", "shop pool_size=500"),
        ("externalDatabase.username", "app max_db_connections=0"),
    ],
)
def test_values_that_reach_pgbouncer_ini_are_rejected_by_the_schema(key, value):
    err = render_error(sets={**EXTERNAL, key: value})
    assert "values don't meet the specifications of the schema" in err, err
    assert f"{key.split('.', 1)[1]}: Does not match pattern" in err, err


@pytest.mark.parametrize("host", ["db.example.internal", "10.0.0.7", "fd00::7", "postgres"])
def test_host_names_and_addresses_are_accepted(host):
    r = render(sets={**EXTERNAL, "externalDatabase.host": host})
    env = env_of(
        container(r.get("Deployment", f"{FULL}-pgbouncer")["spec"]["template"]["spec"], "pgbouncer")
    )
    assert env["PGBOUNCER_DB_HOST"]["value"] == host
