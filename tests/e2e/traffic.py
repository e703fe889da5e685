"""Bounded traffic through the app from inside the cluster, and what it saw.

`Traffic.start()` runs tests/e2e/incluster_traffic.py in a pod of the release's namespace
against the app's Service; `records()` reads the JSON lines it printed so far (its log), so a
test can judge any time window; `stop()` ends it and returns everything. `Sampler` samples
PostgreSQL's pg_stat_activity (the release's user, our own session excluded) in the background
from a psql loop inside the PostgreSQL pod, surviving the pod's replacement.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from e2e_cluster import _tool
from kube import HERE, Release, python_pod, wait_for


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
        result = self.release.kubectl("logs", self.pod, timeout=120)
        out = []
        for line in result.stdout.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if "outcome" in item:
                out.append(item)
        return out

    def window(self, start: float = 0.0, end: float = float("inf")) -> Window:
        return Window([r for r in self.records() if start <= r["t0"] < end])

    def stop(self) -> Window:
        self.release.kubectl(
            "exec", self.pod, "--", "python3", "-c", "open('/tmp/stop', 'w').close()", check=False
        )
        wait_for(
            "the traffic pod to finish",
            lambda: (
                self.release.get("pod", self.pod)["status"].get("phase") in ("Succeeded", "Failed")
            ),
            timeout=self.client_timeout + 60,
        )
        return self.window()

    def confirmed_rows(self) -> dict[int, str]:
        """id -> name of every write the app confirmed (201 with the right body)."""
        return {
            r["id"]: r["name"]
            for r in self.records()
            if r["op"] == "write" and r["outcome"] == "ok"
        }


class Sampler:
    """pg_stat_activity sampled twice a second: (epoch seconds, server connections)."""

    SQL = (
        "SELECT extract(epoch FROM clock_timestamp())::numeric(16,3), count(*) "
        "FROM pg_stat_activity WHERE usename = current_user AND datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )

    def __init__(self, release: Release) -> None:
        self.release = release
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        wait_for("the first pg_stat_activity sample", lambda: bool(self.samples), timeout=60)
        return self

    def _run(self) -> None:
        script = (
            'while :; do PGPASSWORD="$POSTGRES_PASSWORD" psql -X -q -At -F " " '
            f'-U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "{self.SQL}" || true; '
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
                parts = line.split()
                if len(parts) == 2:
                    self.samples.append((float(parts[0]), int(parts[1])))
                if self._stop.is_set():
                    break
            self._proc.kill()
            self._proc.wait()
            self._proc.stdout.close()
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.kill()
        self._thread.join(timeout=10)

    def between(self, start: float, end: float = float("inf")) -> list[int]:
        return [n for t, n in self.samples if start <= t < end]

    def peak(self) -> int:
        return max((n for _, n in self.samples), default=0)


def now() -> float:
    return time.time()
