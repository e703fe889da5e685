"""Operator settings from the environment (prefix ``POOLWARDEN_``), read once in ``main()``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    namespace: str
    """The namespace whose ConnectionBudgets and Deployments the operator watches."""
    drift_interval: float = 60.0
    """Seconds between drift checks of each budget (ConfigMaps edited or deleted by hand)."""
    liveness: str = "http://0.0.0.0:8080/healthz"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        namespace = env.get("POOLWARDEN_NAMESPACE", "")
        if not namespace and SERVICE_ACCOUNT_NAMESPACE.exists():
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        if not namespace:
            raise ConfigError(
                "POOLWARDEN_NAMESPACE is not set and no in-cluster namespace file exists: "
                "set POOLWARDEN_NAMESPACE to the namespace to watch"
            )
        raw = env.get("POOLWARDEN_DRIFT_INTERVAL", "60")
        try:
            drift = float(raw)
        except ValueError:
            drift = -1.0
        if drift <= 0:
            raise ConfigError(
                f"POOLWARDEN_DRIFT_INTERVAL must be a positive number of seconds, got {raw!r}"
            )
        port = env.get("POOLWARDEN_LIVENESS_PORT", "8080")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"POOLWARDEN_LIVENESS_PORT must be a TCP port, got {port!r}")
        host = env.get("POOLWARDEN_LIVENESS_HOST", "0.0.0.0")
        return cls(
            namespace=namespace,
            drift_interval=drift,
            liveness=f"http://{host}:{port}/healthz",
            log_level=env.get("POOLWARDEN_LOG_LEVEL", "INFO").upper(),
        )
