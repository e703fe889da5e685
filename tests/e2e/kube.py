"""One chart release under test: helm, its objects, waits with deadlines, in-cluster probes.

Everything goes through the explicit kubeconfig of the `Cluster` (tests/e2e/e2e_cluster.py).
Database and PgBouncer state is read with `kubectl exec` inside their own pods (psql on the
pod's own socket / 127.0.0.1), app pools through a small toolbox pod that calls every app
pod's `/pool` from inside the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from e2e_cluster import ROOT, Cluster, _tool

from poolwarden import pgbouncer_ini, planfile, planner

CHART = ROOT / "charts" / "poolwarden"
OFFLINE_VALUES = CHART / "ci" / "offline-values.yaml"
APP_IMAGE = "poolwarden/app:0.1.0"
HERE = Path(__file__).parent
T = TypeVar("T")
# psql as the PostgreSQL pod's superuser, run inside that pod over TCP to 127.0.0.1 (a login
# with its password, as an administrator connects): the one place that names the admin login.
ADMIN_PSQL = (
    'PGCONNECT_TIMEOUT=5 PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 '
    '-U "$POSTGRES_USER" -d "$POSTGRES_DB"'
)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 1.0,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something other than None/False; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result is not None and result is not False:
                return result
            last_error = None
        except (AssertionError, subprocess.SubprocessError, ValueError, KeyError) as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f"\nlast error: {last_error}" if last_error else ""
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}{detail}\n{extra}"
            )
        time.sleep(interval)


@dataclass
class Release:
    """A helm release of charts/poolwarden in its own namespace."""

    cluster: Cluster
    namespace: str
    name: str
    values: dict[str, Any] = field(default_factory=dict)
    toolbox_ready: bool = False

    # --- names (charts/poolwarden/templates/_helpers.tpl: poolwarden.fullname) -------------
    @property
    def fullname(self) -> str:
        return self.name if "poolwarden" in self.name else f"{self.name}-poolwarden"

    @property
    def app(self) -> str:
        return f"{self.fullname}-app"

    @property
    def pgbouncer(self) -> str:
        return f"{self.fullname}-pgbouncer"

    @property
    def postgresql(self) -> str:
        return f"{self.fullname}-postgresql"

    @property
    def operator(self) -> str:
        return f"{self.fullname}-operator"

    @property
    def budget(self) -> str:
        return self.fullname

    def selector(self, component: str) -> str:
        return f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"

    # --- helm -------------------------------------------------------------------------------
    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        cmd = [
            _tool("helm"),
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "-n",
            self.namespace,
            *args,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{self.diagnostics()}"
            )
        return result

    def install(self, timeout: str = "8m", **overrides: Any) -> float:
        """`helm upgrade --install --wait` with `values` (+ overrides); returns seconds taken."""
        self.values = merge(self.values, overrides)
        values_file = ROOT / ".state" / "e2e" / f"{self.namespace}-{self.name}-values.json"
        values_file.parent.mkdir(parents=True, exist_ok=True)
        values_file.write_text(json.dumps(self.values))
        start = time.monotonic()
        self.helm(
            "upgrade",
            "--install",
            self.name,
            str(CHART),
            "--create-namespace",
            "-f",
            str(OFFLINE_VALUES),
            "-f",
            str(values_file),
            "--wait",
            "--timeout",
            timeout,
        )
        return time.monotonic() - start

    # --- objects ----------------------------------------------------------------------------
    def get(self, *args: str) -> dict[str, Any]:
        return self.cluster.get_json("-n", self.namespace, *args)

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, **kwargs)

    def pods(self, component: str) -> list[dict[str, Any]]:
        return self.get("pods", "-l", self.selector(component))["items"]

    def ready_pods(self, component: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(component) if is_ready(p)]

    def scale(self, component: str, replicas: int) -> None:
        self.kubectl(
            "scale", "deployment", f"{self.fullname}-{component}", f"--replicas={replicas}"
        )

    def configmap_text(self, name: str, key: str) -> str | None:
        result = self.kubectl("get", "configmap", name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout).get("data", {}).get(key)

    def plan_file(self) -> planfile.PoolPlan | None:
        text = self.configmap_text(f"{self.fullname}-app-plan", "plan.json")
        return None if text is None else planfile.parse(text)

    def sizing_file(self) -> pgbouncer_ini.Sizing | None:
        text = self.configmap_text(f"{self.fullname}-pgbouncer-sizing", "sizing.ini")
        return None if text is None else pgbouncer_ini.parse(text)

    def budget_object(self) -> dict[str, Any]:
        return self.get("connectionbudget", self.budget)

    def condition(self, kind: str) -> dict[str, Any] | None:
        for item in self.budget_object().get("status", {}).get("conditions", []):
            if item.get("type") == kind:
                return item
        return None

    def expected_plan(
        self,
        budget: dict[str, Any] | None = None,
        app: dict[str, Any] | None = None,
        bouncer: dict[str, Any] | None = None,
    ) -> planner.Plan:
        """The planner's answer for the Deployments as they are now (computed here, not read)."""
        spec = (budget or self.budget_object())["spec"]
        app = app or self.get("deployment", self.app)
        bouncer = bouncer or self.get("deployment", self.pgbouncer)
        consumer = spec["consumers"][0]
        return planner.plan(
            planner.Budget(spec["database"]["maxConnections"], spec["database"]["reserved"]),
            planner.PgBouncer(
                bouncer["spec"]["replicas"],
                surge(bouncer),
                spec["pgbouncer"].get("maxClientConn", 1000),
            ),
            [
                planner.Consumer(
                    name=consumer["name"],
                    replicas=app["spec"]["replicas"],
                    workers=consumer["workersPerPod"],
                    weight=consumer["weight"],
                    surge=surge(app),
                    overflow=consumer["overflow"],
                    threads=consumer.get("threadsPerWorker", 0),
                    max_pool_per_worker=consumer.get("maxPoolPerWorker", 0),
                )
            ],
        )

    def restart_counts(self, component: str) -> dict[str, int]:
        """uid -> sum of container restarts, for every pod of the component."""
        return {p["metadata"]["uid"]: restarts(p) for p in self.pods(component)}

    # --- in-pod probes ----------------------------------------------------------------------
    def psql(self, sql: str, timeout: float = 30) -> str:
        """Run SQL in the PostgreSQL pod as its superuser, over its own socket."""
        script = f"{ADMIN_PSQL} -v ON_ERROR_STOP=1 -X -q -At -f -"
        result = self.kubectl(
            "exec",
            "-i",
            f"{self.postgresql}-0",
            "-c",
            "postgresql",
            "--",
            "sh",
            "-c",
            script,
            stdin=sql,
            timeout=timeout,
        )
        return result.stdout

    def consumer_login(self) -> list[dict[str, Any]]:
        """PGUSER, PGDATABASE, PGPASSWORD (from its Secret) of the consumers' role, as
        PgBouncer's Deployment names them: the env of a client that logs in through PgBouncer."""
        deployment = self.get("deployment", self.pgbouncer)
        container = next(
            c
            for c in deployment["spec"]["template"]["spec"]["containers"]
            if c["name"] == "pgbouncer"
        )
        env = {e["name"]: e for e in container.get("env", [])}
        return [
            {"name": "PGUSER", "value": env["PGBOUNCER_DB_USER"]["value"]},
            {"name": "PGDATABASE", "value": env["PGBOUNCER_DB_NAME"]["value"]},
            {"name": "PGPASSWORD", "valueFrom": env["PGBOUNCER_DB_PASSWORD"]["valueFrom"]},
        ]

    def consumer_role(self) -> str:
        """The role every consumer logs in as through PgBouncer (whose connections count)."""
        return next(e["value"] for e in self.consumer_login() if e["name"] == "PGUSER")

    def pgbouncer_admin(self, pod: str, command: str, header: bool = False) -> list[list[str]]:
        """A command on one PgBouncer's admin console, from inside that pod (with `header`,
        the first row holds the column names)."""
        rows = "-A -P footer=off" if header else "-At"
        script = (
            f'PGPASSWORD="$PGBOUNCER_ADMIN_PASSWORD" psql -X -q {rows} -F "|" -h 127.0.0.1 '
            '-p "${PGBOUNCER_LISTEN_PORT:-6432}" '
            '-U "${PGBOUNCER_ADMIN_USER:-pgbouncer_admin}" '
            f'-d pgbouncer -c "{command}"'
        )
        result = self.kubectl("exec", pod, "-c", "pgbouncer", "--", "sh", "-c", script, timeout=30)
        return [line.split("|") for line in result.stdout.splitlines() if line]

    def pgbouncer_config(self, pod: str) -> dict[str, str]:
        return {row[0]: row[1] for row in self.pgbouncer_admin(pod, "SHOW CONFIG")}

    def pgbouncer_databases(self, pod: str) -> dict[str, dict[str, str]]:
        """SHOW DATABASES of one PgBouncer: database (alias) name -> {column: value}."""
        rows = self.pgbouncer_admin(pod, "SHOW DATABASES", header=True)
        if not rows:
            return {}
        columns = rows[0]
        return {row[0]: dict(zip(columns, row, strict=False)) for row in rows[1:]}

    def toolbox(self) -> str:
        """A long-lived pod with the app image (Python) to call app pods from inside."""
        name = "e2e-toolbox"
        if not self.toolbox_ready:
            if self.kubectl("get", "pod", name, check=False).returncode != 0:
                self.cluster.apply(
                    self.namespace, python_pod(name, "import time; time.sleep(3000)")
                )
            self.cluster.wait_pod_phase(self.namespace, name, "Running", timeout=180)
            self.toolbox_ready = True
        return name

    def app_pools(self, pods: list[dict[str, Any]], workers: int) -> dict[str, dict[str, Any]]:
        """pod name -> {worker pid -> /pool answer}, every worker of every given pod."""
        targets = {
            p["status"]["podIP"]: p["metadata"]["name"]
            for p in pods
            if p.get("status", {}).get("podIP")
        }
        if not targets:
            return {}
        source = (HERE / "incluster_pool.py").read_text()
        result = self.kubectl(
            "exec",
            self.toolbox(),
            "--",
            "python3",
            "-c",
            source,
            str(workers),
            *targets,
            timeout=60,
        )
        answer = json.loads(result.stdout)
        return {targets[ip]: workers_seen for ip, workers_seen in answer.items()}

    # --- diagnostics ------------------------------------------------------------------------
    def diagnostics(self) -> str:
        """Pods, Events, the budget, recent logs of every pod and SHOW POOLS of each PgBouncer."""
        parts = []
        for title, args in (
            ("pods", ("get", "pods", "-o", "wide")),
            ("events", ("get", "events", "--sort-by=.lastTimestamp")),
            ("connectionbudgets", ("get", "connectionbudgets", "-o", "yaml")),
            ("configmaps", ("get", "configmaps", "-o", "yaml")),
        ):
            result = self.kubectl(*args, check=False)
            parts.append(f"--- {title}\n{result.stdout}{result.stderr}")
        pods = self.kubectl("get", "pods", "-o", "json", check=False)
        items = json.loads(pods.stdout)["items"] if pods.returncode == 0 else []
        for pod in items:
            name = pod["metadata"]["name"]
            for container in pod["spec"]["containers"]:
                logs = self.kubectl("logs", name, "-c", container["name"], "--tail=60", check=False)
                parts.append(f"--- logs {name}/{container['name']}\n{logs.stdout}{logs.stderr}")
                if restarts(pod):
                    prev = self.kubectl(
                        "logs",
                        name,
                        "-c",
                        container["name"],
                        "--previous",
                        "--tail=40",
                        check=False,
                    )
                    parts.append(f"--- previous logs {name}\n{prev.stdout}{prev.stderr}")
            if pod["metadata"].get("labels", {}).get(
                "app.kubernetes.io/component"
            ) == "pgbouncer" and is_ready(pod):
                try:
                    rows = self.pgbouncer_admin(name, "SHOW POOLS")
                    parts.append(f"--- SHOW POOLS {name}\n" + "\n".join("|".join(r) for r in rows))
                except AssertionError as error:
                    parts.append(f"--- SHOW POOLS {name} failed: {error}")
        return "\n".join(parts)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of helm values (extra wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def is_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def restarts(pod: dict[str, Any]) -> int:
    return sum(s.get("restartCount", 0) for s in pod.get("status", {}).get("containerStatuses", []))


def surge(deployment: dict[str, Any]) -> int:
    strategy = deployment["spec"].get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    return planner.resolve_surge(
        deployment["spec"]["replicas"],
        strategy.get("type", "RollingUpdate"),
        rolling.get("maxSurge"),
    )


def python_pod(
    name: str,
    source: str,
    *args: str,
    labels: dict[str, str] | None = None,
    env: list[dict[str, Any]] | None = None,
    memory: str = "128Mi",
) -> dict[str, Any]:
    """A bare pod running `python3 -c source args` in the app image, non-root, restricted."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "poolwarden-e2e", **(labels or {})},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 2,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": APP_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-u", "-c", source, *args],
                    "env": env or [],
                    "resources": {
                        "requests": {"cpu": "20m", "memory": "32Mi"},
                        "limits": {"memory": memory},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
