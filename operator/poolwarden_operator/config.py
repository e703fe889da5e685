"""Operator settings from the environment (prefix ``POOLWARDEN_``), read once in ``main()``."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

DEFAULT_METRICS_PORT = 8081
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
    metrics_host: str = "0.0.0.0"
    metrics_port: int = DEFAULT_METRICS_PORT
    """Port of the Prometheus endpoint (``/metrics``); 0 turns it off."""
    log_level: str = "INFO"
    consumer_namespaces: tuple[str, ...] = ()
    """Other namespaces whose Deployments may join a budget by label (watched too)."""
    ledger_interval: float = 10.0
    """Seconds between samples of every ready PgBouncer pod's pools (the in-use metrics)."""
    ledger_status_interval: float = 60.0
    """Seconds at least between two patches of a budget's ``status.inUse`` (only on change)."""
    ledger_window: float = 300.0
    """Seconds over which the in-use peaks are taken."""

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
        drift = _seconds(env, "POOLWARDEN_DRIFT_INTERVAL", "60")
        ledger = _seconds(env, "POOLWARDEN_LEDGER_INTERVAL", "10")
        ledger_status = _seconds(env, "POOLWARDEN_LEDGER_STATUS_INTERVAL", "60")
        window = _seconds(env, "POOLWARDEN_LEDGER_WINDOW", "300")
        if window < ledger:
            raise ConfigError(
                f"POOLWARDEN_LEDGER_WINDOW ({window:g} s) must be at least "
                f"POOLWARDEN_LEDGER_INTERVAL ({ledger:g} s): the peaks are taken over samples"
            )
        port = env.get("POOLWARDEN_LIVENESS_PORT", "8080")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"POOLWARDEN_LIVENESS_PORT must be a TCP port, got {port!r}")
        host = env.get("POOLWARDEN_LIVENESS_HOST", "0.0.0.0")
        metrics = env.get("POOLWARDEN_METRICS_PORT", str(DEFAULT_METRICS_PORT))
        if not metrics.isdigit() or not 0 <= int(metrics) < 65536 or metrics == port:
            raise ConfigError(
                "POOLWARDEN_METRICS_PORT must be a TCP port other than the liveness port, or 0 "
                f"for no metrics endpoint, got {metrics!r}"
            )
        extra = env.get("POOLWARDEN_CONSUMER_NAMESPACES", "")
        others = tuple(dict.fromkeys(n.strip() for n in extra.split(",") if n.strip()))
        for other in others:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", other):
                raise ConfigError(
                    f"POOLWARDEN_CONSUMER_NAMESPACES must be namespace names separated by commas, "
                    f"got {other!r}"
                )
        return cls(
            namespace=namespace,
            drift_interval=drift,
            liveness=f"http://{host}:{port}/healthz",
            metrics_host=env.get("POOLWARDEN_METRICS_HOST", host),
            metrics_port=int(metrics),
            log_level=env.get("POOLWARDEN_LOG_LEVEL", "INFO").upper(),
            consumer_namespaces=tuple(n for n in others if n != namespace),
            ledger_interval=ledger,
            ledger_status_interval=ledger_status,
            ledger_window=window,
        )


def _seconds(env: dict[str, str], name: str, default: str) -> float:
    raw = env.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value
