"""Talking to the cluster under test through one explicit kubeconfig (kubectl, kind load)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"


def _tool(name: str) -> str:
    candidate = TOOLS_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found in {TOOLS_BIN} or on PATH; run 'make tools'")
    return found


@dataclass(frozen=True)
class Cluster:
    """A cluster reached through one explicit kubeconfig."""

    kubeconfig: Path
    kind_name: str | None

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["KUBECONFIG"] = str(self.kubeconfig)
        cmd = [_tool("kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, namespace: str, *objects: dict[str, Any]) -> None:
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))

    def wait_pod_phase(self, namespace: str, pod: str, phase: str, timeout: float = 180) -> None:
        """Wait until the pod reaches `phase`; fail early (with its logs) if it fails instead."""
        deadline = time.monotonic() + timeout
        last = "unknown"
        while time.monotonic() < deadline:
            obj = self.get_json("pod", pod, "-n", namespace)
            last = obj.get("status", {}).get("phase", "Pending")
            if last == phase:
                return
            if last == "Failed":
                break
            time.sleep(2)
        logs = self.kubectl("logs", "-n", namespace, pod, check=False)
        events = self.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.name={pod}",
            check=False,
        )
        raise AssertionError(
            f"pod {namespace}/{pod} is {last}, wanted {phase} within {timeout:.0f}s\n"
            f"logs:\n{logs.stdout}{logs.stderr}\nevents:\n{events.stdout}"
        )

    def load_image(self, image: str) -> None:
        if self.kind_name is None:
            return
        subprocess.run(
            [_tool("kind"), "load", "docker-image", "--name", self.kind_name, image],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
