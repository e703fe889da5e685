"""Bounded traffic through the app from inside the cluster, and what it saw.

`Traffic.start()` runs tests/e2e/incluster_traffic.py in a pod of the release's namespace
against the app's Service; `records()` reads the JSON lines it printed so far (its log), so a
test can judge any time window; `stop()` ends it and returns everything. `Load` runs
tests/e2e/incluster_load.py: many database clients straight through PgBouncer's Service.
`Sampler` counts the consumers' server connections in pg_stat_activity in the background, by
an administrator's fresh login every half second (a psql loop inside the PostgreSQL pod,
surviving the pod's replacement), and keeps every login that failed.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import picture
from e2e_cluster import _tool
from kube import ADMIN_PSQL, HERE, Release, python_pod, wait_for

# The load pod's labels: a release admits them to PgBouncer with
# networkPolicy.pgbouncerExtraIngressFrom (see LOAD_INGRESS).
LOAD_LABELS = {"poolwarden.io/e2e-load": "true"}
LOAD_INGRESS = [{"podSelector": {"matchLabels": LOAD_LABELS}}]


def pod_json_lines(release: Release, pod: str, key: str) -> list[dict[str, Any]]:
    """The JSON lines carrying ``key`` that an in-cluster generator printed to its log."""
    result = release.kubectl("logs", pod, timeout=120)
    out = []
    for line in result.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and key in item:
            out.append(item)
    return out


def stop_pod(release: Release, pod: str, what: str, *, timeout: float) -> None:
    """Ask an in-cluster generator to stop (its stop file) and wait until its pod has ended."""
    release.kubectl(
        "exec", pod, "--", "python3", "-c", "open('/tmp/stop', 'w').close()", check=False
    )
    wait_for(
        f"{what} to finish",
        lambda: release.get("pod", pod)["status"].get("phase") in ("Succeeded", "Failed"),
        timeout=timeout,
    )


@dataclass
class Window:
    """The requests that started in [start, end) and how they ended."""

    records: list[dict[str, Any]]

    def by_outcome(self, outcome: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["outcome"] == outcome]

    @property
    def ok(self) -> int:
        return len(self.by_outcome("ok"))

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["outcome"] != "ok"]

    def examples(self, per_outcome: int = 3) -> str:
        """A few requests of each outcome other than ok, for failure messages."""
        lines = []
        for outcome in ("wrong", "error", "refused", "unavailable"):
            lines += [json.dumps(r) for r in self.by_outcome(outcome)[:per_outcome]]
        return "\n".join(lines)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        slowest = max((r["t1"] - r["t0"] for r in self.records), default=0.0)
        return f"{len(self.records)} requests {counts}, slowest {slowest:.2f}s"


@dataclass
class Traffic:
    release: Release
    threads: int = 3
    pause: float = 0.05
    max_seconds: int = 1500
    max_requests: int = 200_000
    client_timeout: float = 60.0
    run_id: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:8]}")
    pod: str = ""

    def start(self) -> Traffic:
        self.pod = f"traffic-{self.run_id}"
        url = f"http://{self.release.app}.{self.release.namespace}.svc:80"
        source = (HERE / "incluster_traffic.py").read_text()
        self.release.cluster.apply(
            self.release.namespace,
            python_pod(
                self.pod,
                source,
                url,
                self.run_id,
                str(self.threads),
                str(self.pause),
                str(self.max_seconds),
                str(self.max_requests),
                str(self.client_timeout),
            ),
        )
        self.release.cluster.wait_pod_phase(self.release.namespace, self.pod, "Running", 180)
        wait_for("the first answered request", lambda: self.window().ok > 0, timeout=120)
        return self

    def records(self) -> list[dict[str, Any]]:
        return pod_json_lines(self.release, self.pod, "outcome")

    def window(self, start: float = 0.0, end: float = float("inf")) -> Window:
        return Window([r for r in self.records() if start <= r["t0"] < end])

    def stop(self) -> Window:
        stop_pod(self.release, self.pod, "the traffic pod", timeout=self.client_timeout + 60)
        return self.window()

    def confirmed_rows(self) -> dict[int, str]:
        """id -> name of every write the app confirmed (201 with the right body)."""
        return {
            r["id"]: r["name"]
            for r in self.records()
            if r["op"] == "write" and r["outcome"] == "ok"
        }


@dataclass
class LoadWindow:
    """The load generator's per-second reports in a time window."""

    reports: list[dict[str, Any]]

    @property
    def ok(self) -> int:
        return sum(r["ok"] for r in self.reports)

    @property
    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for report in self.reports:
            for message, count in report["errors"].items():
                out[message] = out.get(message, 0) + count
        return dict(sorted(out.items(), key=lambda item: -item[1]))

    @property
    def max_open(self) -> int:
        return max((r["open"] for r in self.reports), default=0)

    def summary(self) -> str:
        seconds = len(self.reports)
        rate = self.ok / seconds if seconds else 0.0
        errors = self.errors
        return (
            f"{self.ok} queries in {seconds} s ({rate:.0f}/s), up to {self.max_open} clients "
            f"connected, {sum(errors.values())} client errors"
            + (f": {json.dumps(errors)}" if errors else "")
        )


@dataclass
class Load:
    """`clients` database clients looping `SELECT pg_sleep(sleep)` through PgBouncer's Service
    (tests/e2e/incluster_load.py in a pod), logged in as the consumers' role."""

    release: Release
    clients: int = 120
    sleep: float = 0.2
    lifetime: float = 3.0
    max_seconds: int = 1200
    labels: dict[str, str] = field(default_factory=lambda: dict(LOAD_LABELS))
    pod: str = field(default_factory=lambda: f"load-{uuid.uuid4().hex[:8]}")

    def start(self) -> Load:
        port = self.release.get("service", self.release.pgbouncer)["spec"]["ports"][0]["port"]
        host = f"{self.release.pgbouncer}.{self.release.namespace}.svc"
        self.release.cluster.apply(
            self.release.namespace,
            python_pod(
                self.pod,
                (HERE / "incluster_load.py").read_text(),
                host,
                str(port),
                str(self.clients),
                str(self.sleep),
                str(self.max_seconds),
                str(self.lifetime),
                labels=self.labels,
                env=self.release.consumer_login(),
                memory="384Mi",
            ),
        )
        self.release.cluster.wait_pod_phase(self.release.namespace, self.pod, "Running", 180)
        # Clients reconnect every few seconds: at any instant a few are between connections.
        wait_for(
            f"{self.clients} load clients connected and answered",
            lambda: any(r["open"] >= 0.95 * self.clients and r["ok"] for r in self.reports()),
            timeout=120,
            on_timeout=lambda: self.window().summary(),
        )
        return self

    def reports(self) -> list[dict[str, Any]]:
        return pod_json_lines(self.release, self.pod, "t")

    def window(self, start: float = 0.0, end: float = float("inf")) -> LoadWindow:
        return LoadWindow([r for r in self.reports() if start <= r["t"] < end])

    def stop(self) -> LoadWindow:
        stop_pod(self.release, self.pod, "the load pod", timeout=90)
        return self.window()


@dataclass
class UserWindow:
    """The user load's per-second reports in a time window (tests/e2e/incluster_users.py)."""

    reports: list[dict[str, Any]]

    def _sum(self, key: str) -> int:
        return sum(r[key] for r in self.reports)

    def _merged(self, key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for report in self.reports:
            for name, n in report[key].items():
                out[name] = out.get(name, 0) + n
        return dict(sorted(out.items(), key=lambda item: -item[1]))

    @property
    def ok(self) -> int:
        return self._sum("ok")

    @property
    def unavailable(self) -> int:
        return self._sum("unavailable")

    @property
    def wrong(self) -> dict[str, int]:
        return self._merged("wrong")

    @property
    def errors(self) -> dict[str, int]:
        return self._merged("errors")

    @property
    def failed(self) -> int:
        return self.unavailable + sum(self.wrong.values()) + sum(self.errors.values())

    @property
    def max_busy(self) -> int:
        return max((r["busy"] for r in self.reports), default=0)

    def latency(self, key: str) -> float:
        """The worst per-second `key` (p50, p99, max) of the window."""
        return max((r["latency"][key] for r in self.reports), default=0.0)

    def examples(self, limit: int = 6) -> str:
        found = [e for r in self.reports for e in r.get("examples", [])]
        return "\n".join(json.dumps(e) for e in found[:limit])

    def summary(self) -> str:
        seconds = len(self.reports)
        rate = self.ok / seconds if seconds else 0.0
        answered = self.ok + self.failed
        share = self.failed / answered if answered else 0.0
        return (
            f"{self.ok} ok in {seconds} s ({rate:.0f}/s), {self.failed} failed ({share:.0%}): "
            f"{self.unavailable} x 503, "
            f"wrong {json.dumps(self.wrong)}, errors {json.dumps(self.errors)}, "
            f"up to {self.max_busy} users waiting, latency per second p50 <= "
            f"{self.latency('p50'):.2f} s, p99 <= {self.latency('p99'):.2f} s, "
            f"max {self.latency('max'):.2f} s"
        )


@dataclass
class UserLoad:
    """`users` users of the app, each looping a `GET /probe/<n>?sleep=<sleep>` through the
    app's Service (tests/e2e/incluster_users.py in a pod), bounded by `max_seconds`."""

    release: Release
    users: int = 100
    sleep: float = 1.0
    max_seconds: int = 600
    client_timeout: float = 60.0
    pod: str = field(default_factory=lambda: f"users-{uuid.uuid4().hex[:8]}")
    service: str = ""
    """The Service the users call (port 80); empty: the app's."""

    def start(self) -> UserLoad:
        url = f"http://{self.service or self.release.app}.{self.release.namespace}.svc:80"
        self.release.cluster.apply(
            self.release.namespace,
            python_pod(
                self.pod,
                (HERE / "incluster_users.py").read_text(),
                url,
                str(self.users),
                str(self.sleep),
                str(self.max_seconds),
                str(self.client_timeout),
                memory="256Mi",
            ),
        )
        self.release.cluster.wait_pod_phase(self.release.namespace, self.pod, "Running", 180)
        wait_for(
            f"{self.users} users waiting on the app and answers coming back",
            lambda: any(r["busy"] >= 0.95 * self.users and r["ok"] for r in self.reports()),
            timeout=120,
            on_timeout=lambda: self.window().summary(),
        )
        return self

    def reports(self) -> list[dict[str, Any]]:
        return pod_json_lines(self.release, self.pod, "busy")

    def window(self, start: float = 0.0, end: float = float("inf")) -> UserWindow:
        return UserWindow([r for r in self.reports() if start <= r["t"] < end])

    def stop(self) -> UserWindow:
        stop_pod(self.release, self.pod, "the user load pod", timeout=self.client_timeout + 60)
        return self.window()


class Sampler:
    """pg_stat_activity sampled twice a second by an administrator's fresh login each time.

    Every half second a new psql logs in as the PostgreSQL pod's superuser (tests/e2e/kube.py
    ADMIN_PSQL, over TCP inside the pod) and counts the server connections of the consumers'
    role: `samples` holds (epoch seconds, connections), `active` (epoch seconds, those running
    a statement: transactions at once, which idle connections kept open by PgBouncer are not).
    A login or query that fails is an administrator who could not connect: `errors` holds
    (epoch seconds, message). `by_pod` holds (epoch seconds, {pod: connections}), the pod being
    the first part of each connection's application_name (`<pod>/<pid>`, as PgBouncer passes
    the client's on), for the run's picture (tests/e2e/picture.py).
    """

    def __init__(self, release: Release, role: str | None = None) -> None:
        self.release = release
        self.role = role or release.consumer_role()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.role):
            raise ValueError(f"role name {self.role!r}: the sampler quotes plain identifiers only")
        self.samples: list[tuple[float, int]] = []
        self.active: list[tuple[float, int]] = []
        self.errors: list[tuple[float, str]] = []
        self.by_pod: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def sql(self) -> str:
        # One row: epoch, connections, active ones, then "pod:n,pod:n" (empty when none; a
        # pod name cannot hold ' ', ',' or ':', and the translate keeps any other
        # application_name from breaking the line).
        return (
            "SELECT extract(epoch FROM clock_timestamp())::numeric(16,3), coalesce(sum(n), 0), "
            "coalesce(sum(a), 0), coalesce(string_agg(p || ':' || n, ',' ORDER BY p), '') "
            "FROM (SELECT translate(split_part(application_name, '/', 1), ' ,:', '___') AS p, "
            "count(*) AS n, count(*) FILTER (WHERE state = 'active') AS a "
            f"FROM pg_stat_activity WHERE usename = '{self.role}' AND pid <> pg_backend_pid() "
            "GROUP BY 1) AS s"
        )

    def start(self) -> Sampler:
        self._thread.start()
        wait_for("the first pg_stat_activity sample", lambda: bool(self.samples), timeout=60)
        return self

    def _run(self) -> None:
        # One line per attempt: "S <epoch> <count> <active>" or
        # "E <epoch> <psql's message on one line>".
        script = (
            "while :; do "
            f'if out=$({ADMIN_PSQL} -X -q -At -F " " -c "{self.sql}" 2>&1); '
            'then echo "S $out"; '
            'else printf "E %s %s\\n" "$(date +%s.%N)" "$(printf %s "$out" | tr "\\n" " ")"; fi; '
            "sleep 0.5; done"
        )
        cmd = [
            _tool("kubectl"),
            "--kubeconfig",
            str(self.release.cluster.kubeconfig),
            "-n",
            self.release.namespace,
            "exec",
            f"{self.release.postgresql}-0",
            "-c",
            "postgresql",
            "--",
            "sh",
            "-c",
            script,
        ]
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                self._parse(line)
                if self._stop.is_set():
                    break
            self._proc.kill()
            self._proc.wait()
            self._proc.stdout.close()
            self._stop.wait(1.0)

    def _parse(self, line: str) -> None:
        kind, _, rest = line.strip().partition(" ")
        if kind == "S":
            parts = rest.split()
            if len(parts) in (3, 4):  # no 4th part when no connection is open
                self.samples.append((float(parts[0]), int(parts[1])))
                self.active.append((float(parts[0]), int(parts[2])))
                field = parts[3] if len(parts) == 4 else ""
                self.by_pod.append((float(parts[0]), picture.pod_counts(field)))
        elif kind == "E":
            at, _, message = rest.partition(" ")
            try:
                self.errors.append((float(at), message.strip()))
            except ValueError:
                self.errors.append((time.time(), rest.strip()))

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.kill()
        self._thread.join(timeout=10)

    def between(self, start: float, end: float = float("inf")) -> list[int]:
        return [n for t, n in self.samples if start <= t < end]

    def errors_between(self, start: float, end: float = float("inf")) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.errors if start <= t < end]

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time in [start, end) without an attempt (a sample or an error) recorded."""
        times = sorted(
            [t for t, _ in self.samples if start <= t < end]
            + [t for t, _ in self.errors if start <= t < end]
        )
        edges = [start, *times, min(end, time.time())]
        return max(b - a for a, b in zip(edges, edges[1:], strict=False))

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max(self.between(start, end), default=0)

    def active_between(self, start: float, end: float = float("inf")) -> list[int]:
        return [n for t, n in self.active if start <= t < end]


def now() -> float:
    return time.time()
