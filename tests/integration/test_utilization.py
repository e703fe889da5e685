"""The budget is usable: the bench's scenarios (bench/utilization.py) at small scale.

Real PostgreSQL 17, two PgBouncer 1.24 replicas behind a round-robin balancer (a Service),
app pods as gunicorn processes with the new planner's plan: per-consumer PgBouncer aliases and
max_user_connections, app pools as large as a worker can use. The app role's CONNECTION LIMIT
is above the budget here, so only the plan keeps PostgreSQL within it. Assertions are ratios
(of the budget, between consumers), never absolute times.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tools" / "devstack"))
import devstack  # noqa: E402
import utilization  # noqa: E402

MAX_CONNECTIONS, RESERVED, BOUNCERS = 20, 4, 2
BUDGET = MAX_CONNECTIONS - RESERVED  # 8 per PgBouncer replica: a 3:1 split is exact (6 + 2)
SLEEP, WAIT_TIMEOUT, SECONDS = 1.0, 5, 6.0
WARMUP = WAIT_TIMEOUT  # errors in the window are the steady state's
CLIENTS = 2 * BUDGET


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[utilization.Bench]:
    if not (devstack.ROOT / ".poolwarden-rootfs").exists():
        pytest.skip(f"integration tier needs PostgreSQL 17 + PgBouncer 1.24 in {devstack.ROOT}: "
                    "run `make dev-deps`")
    b = utilization.Bench(tmp_path_factory.mktemp("utilization"),
                          max_connections=MAX_CONNECTIONS, reserved=RESERVED, bouncers=BOUNCERS,
                          wait_timeout=WAIT_TIMEOUT)
    try:
        b.start()
        yield b
    finally:
        b.stop()


def run(bench: utilization.Bench, scenario: utilization.Scenario,
        seconds: float = SECONDS) -> utilization.Outcome:
    layout = bench.layout("new", scenario)
    return bench.run(layout, scenario, clients=CLIENTS, warmup=WARMUP, seconds=seconds,
                     sleep=SLEEP)


def test_one_busy_pod_of_several_uses_most_of_the_budget(bench: utilization.Bench) -> None:
    """All load on one pod of three: its pool and both PgBouncer replicas' shares serve it,
    and no request fails."""
    scenario = utilization.Scenario("b", "all load on one pod of 3", (("web", 3, 1),),
                                    loaded={"web": (0,)})
    outcome = run(bench, scenario)
    used = outcome.achieved() / BUDGET
    assert used >= 0.7, (f"one busy pod reached {used:.2f} of the budget ({outcome.ok} ok, "
                         f"{outcome.statuses})")
    assert outcome.error_fraction <= 0.01, outcome.statuses
    assert 0 < outcome.pg_peak <= BUDGET, f"pg_stat_activity peak {outcome.pg_peak} > {BUDGET}"


def test_two_saturating_consumers_share_the_budget_by_weight(bench: utilization.Bench) -> None:
    """Weights 3:1, each consumer alone asking for the whole budget: PgBouncer's aliases split
    the server connections 3:1."""
    scenario = utilization.Scenario("c", "weights 3:1", (("web", 2, 3), ("batch", 2, 1)))
    # batch's 2 connections complete only ~2 per second: a window of 6 s (12 completions) gave
    # 3.67 when one transaction per connection fell outside it; 3 windows' worth halves that
    outcome = run(bench, scenario, seconds=3 * SECONDS)
    ratio = outcome.share_ratio("web", "batch")
    assert abs(ratio - 3) <= 0.2 * 3, (
        f"share ratio {ratio:.2f}: web {outcome.achieved('web'):.1f}, "
        f"batch {outcome.achieved('batch'):.1f} concurrent ({outcome.statuses})")
    assert outcome.achieved() / BUDGET >= 0.7, outcome.statuses
    assert 0 < outcome.pg_peak <= BUDGET, f"pg_stat_activity peak {outcome.pg_peak} > {BUDGET}"
