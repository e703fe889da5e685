"""One gunicorn app server started by an integration test, and how tests talk to it.

Kept out of conftest.py so test modules can import it by a name no other test folder uses.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import httpx

from poolwarden import planfile


@dataclasses.dataclass
class App:
    """One gunicorn app server started for a test."""

    name: str
    url: str
    workers: int
    plan_file: Path
    log_file: Path
    pid: int

    def write_plan(self, plan: planfile.PoolPlan) -> None:
        write_atomically(self.plan_file, planfile.render(plan))

    def write_plan_text(self, text: str) -> None:
        write_atomically(self.plan_file, text)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def pools(self, *, timeout: float = 30.0) -> dict[int, dict]:
        """/pool of every worker (asks until each worker pid has answered)."""
        seen: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while len(seen) < self.workers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only workers {sorted(seen)} answered /pool")
                # A fresh connection each time so the kernel spreads them over the workers.
                body = client.get("/pool", headers={"Connection": "close"}).json()
                seen[body["pid"]] = body
        return seen

    def wait_for_plan(self, generation: int, *, timeout: float = 30.0) -> dict[int, dict]:
        """Poll until every worker reports `generation`; return their /pool answers."""
        deadline = time.monotonic() + timeout
        while True:
            pools = self.pools()
            # Another round to catch workers not yet asked in this pass.
            if all(p["generation"] == generation for p in pools.values()):
                return pools
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still on {pools}; wanted generation {generation}")
            time.sleep(0.2)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def plan_file_for(tmp_path: Path, name: str, plan: planfile.PoolPlan | None,
                  env: dict[str, str]) -> Path:
    """The plan file of one started app (written when `plan` is given), and the env naming it
    and the instance (unless the caller set them)."""
    path = tmp_path / name / "plan.json"
    path.parent.mkdir(parents=True)
    if plan is not None:
        write_atomically(path, planfile.render(plan))
    env.setdefault("POOLWARDEN_INSTANCE", name)
    env.setdefault("POOLWARDEN_PLAN_FILE", str(path))
    return path
