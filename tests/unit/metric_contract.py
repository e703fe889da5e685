"""The operator's Prometheus series: the names the alerting rules may use.

Written once here from the operator's metric contract (docs/monitoring.md) until the operator's
own module of metric names exists; then this constant becomes an import of that module's names
and nothing else changes (tests/unit/test_prometheus_rules.py reads only OPERATOR_SERIES).
Labels: `namespace`, `budget` (budget series); `namespace`, `budget`, `consumer` (consumer series).
"""

from __future__ import annotations

OPERATOR_SERIES = frozenset(
    {
        "poolwarden_budget_connections",
        "poolwarden_budget_server_connections_planned",
        "poolwarden_budget_utilization",
        "poolwarden_budget_overcommitted",
        "poolwarden_budget_plan_generation",
        "poolwarden_budget_ready",
        "poolwarden_consumer_server_pool",
        "poolwarden_consumer_pool_size",
        "poolwarden_consumer_max_overflow",
    }
)
