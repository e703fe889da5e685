"""``python -m poolwarden_operator``: run the operator in the namespace from the environment.

Settings (see ``config``): POOLWARDEN_NAMESPACE, POOLWARDEN_DRIFT_INTERVAL,
POOLWARDEN_LIVENESS_HOST/PORT (kopf's liveness endpoint, ``/healthz``),
POOLWARDEN_METRICS_HOST/PORT (the Prometheus endpoint, ``/metrics``, see ``metrics``; port 0:
none), POOLWARDEN_LOG_LEVEL,
POOLWARDEN_CONSUMER_NAMESPACES (other namespaces whose Deployments may join a budget by label).
"""

from __future__ import annotations

import logging
import sys

import kopf

from poolwarden_operator import config, handlers


def main() -> int:
    try:
        settings = config.Settings.from_env()
    except config.ConfigError as exc:
        print(f"poolwarden-operator: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    assert handlers.BUDGETS  # the import registers the handlers
    kopf.run(
        standalone=True,
        namespaces=[settings.namespace, *settings.consumer_namespaces],
        liveness_endpoint=settings.liveness,
        memo=kopf.Memo(settings=settings),  # read once, here; handlers take it from memo
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
