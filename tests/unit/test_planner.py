"""The planner's invariants (hypothesis over the issue's ranges) and worked examples."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolwarden import planner

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_consumer(
    name="app",
    replicas=2,
    workers=2,
    weight=1,
    surge=0,
    overflow="none",
    threads=0,
    max_pool_per_worker=0,
):
    return planner.Consumer(
        name, replicas, workers, weight, surge, overflow, threads, max_pool_per_worker
    )


@st.composite
def scenarios(draw):
    max_connections = draw(st.integers(1, 10_000))
    reserved = draw(st.integers(0, max_connections - 1))
    available = max_connections - reserved
    replicas = draw(st.integers(0, min(50, available)))
    surge = draw(st.integers(0, available - replicas))
    bouncer = planner.PgBouncer(replicas, surge, draw(st.integers(1, 5000)))
    count = draw(st.integers(1, 10))
    consumers = [
        planner.Consumer(
            name=f"c{i}",
            replicas=(r := draw(st.integers(0, 5000))),
            workers=draw(st.integers(1, 64)),
            weight=draw(st.integers(1, 10)),
            surge=planner.resolve_surge(
                r, "RollingUpdate", draw(st.sampled_from([0, 1, "25%", "100%"]))
            ),
            overflow=draw(st.sampled_from(planner.OVERFLOW_POLICIES)),
            threads=draw(st.sampled_from([0, 0, 1, 4, 32])),
            max_pool_per_worker=draw(st.sampled_from([0, 0, 1, 10, 200])),
        )
        for i in range(count)
    ]
    # Small fleets make the feasible branch common; wide ones exercise overcommit.
    if draw(st.booleans()):
        consumers = [
            dataclasses.replace(c, replicas=c.replicas % 7, surge=c.surge % 3) for c in consumers
        ]
    return planner.Budget(max_connections, reserved), bouncer, consumers


def active(result):
    return [c for c in result.consumers if c.replicas > 0]


@FAST
@given(scenarios())
def test_server_side_of_every_pod_that_may_hold_connections_stays_within_the_budget(scenario):
    budget, bouncer, consumers = scenario
    result = planner.plan(budget, bouncer, consumers)
    b = result.pgbouncer
    assert result.server_total <= result.budget
    assert bouncer.pods * b.max_db_connections <= budget.available
    assert b.max_user_connections == b.max_db_connections  # caps the sum over the aliases
    assert b.default_pool_size + b.reserve_pool_size == b.max_db_connections
    assert all(1 <= c.server_pool <= b.max_db_connections for c in result.consumers)
    pools = [c.server_pool for c in active(result)]
    if b.max_db_connections >= len(pools):
        assert sum(pools) == (b.max_db_connections if pools else 0)  # they share each pod
        assert not result.server_short
    else:
        assert pools == [1] * len(pools) and result.server_short and result.overcommitted
        assert "server side" in result.explanation
        needed = planner.needed_max_connections(result)
        assert f"Raise maxConnections to at least {needed}" in result.explanation
    idle = [c for c in result.consumers if c.replicas == 0]
    assert all(c.server_pool == 1 for c in idle)  # outside the split: a first pod can connect
    assert all(c.server_total == c.server_pool * b.replicas for c in result.consumers)


@FAST
@given(scenarios())
def test_server_pools_follow_the_weights_within_one_connection(scenario):
    result = planner.plan(*scenario)
    max_db = result.pgbouncer.max_db_connections
    group = active(result)
    total = sum(c.weight for c in group)
    if not group or max_db < len(group):
        return
    for c in group:
        quota = Fraction(max_db * c.weight, total)
        assert c.server_pool < quota + 1, (c, quota)  # never a whole connection above its weight
        if all(max_db * other.weight >= total for other in group):
            # Every exact share is at least 1, so the minimum of 1 forces nobody up.
            assert abs(c.server_pool - quota) < 1, (c, quota)


@FAST
@given(scenarios())
def test_client_total_fits_pgbouncer_unless_overcommitted(scenario):
    budget, bouncer, consumers = scenario
    result = planner.plan(budget, bouncer, consumers)
    assert result.client_limit == bouncer.max_client_conn * max(1, bouncer.replicas)
    assert result.pgbouncer.max_client_conn == bouncer.max_client_conn  # never raised
    assert result.client_total == sum(c.peak_total for c in result.consumers)
    assert result.overcommitted == (result.server_short or result.client_short)
    if not result.client_short:
        assert result.client_total <= result.client_limit
    else:
        assert all(c.share == 1 for c in result.consumers if c.replicas + c.surge > 0)
        assert "client side" in result.explanation
        needed = planner.needed_max_client_conn(result)
        assert f"Raise maxClientConn to at least {needed}" in result.explanation
        assert not planner.plan(
            budget, dataclasses.replace(bouncer, max_client_conn=needed), consumers
        ).client_short


@FAST
@given(scenarios())
def test_every_worker_gets_at_least_one_and_never_more_than_it_can_use(scenario):
    budget, bouncer, consumers = scenario
    result = planner.plan(budget, bouncer, consumers)
    for c, given_consumer in zip(result.consumers, consumers, strict=True):
        assert c.pool_size >= 1 and c.max_overflow >= 0
        assert c.cap == given_consumer.cap
        assert 1 <= c.share <= max(1, min(c.cap, math.ceil(c.server_total / c.workers)))
        divisor = planner.OVERFLOW_FRACTIONS[c.overflow]
        assert c.max_overflow == (c.share // divisor if divisor else 0)
        assert c.per_pod == c.workers * c.share


@FAST
@given(scenarios())
def test_utilization_is_what_can_be_busy_at_once(scenario):
    result = planner.plan(*scenario)
    busy = sum(min(c.server_total, c.replicas * c.per_pod) for c in result.consumers)
    busy = min(busy, result.pgbouncer.replicas * result.pgbouncer.max_user_connections)
    assert result.utilization == round(busy / result.budget, 2)
    assert 0 <= result.utilization <= 1


@FAST
@given(scenarios())
def test_plan_is_deterministic(scenario):
    assert planner.plan(*scenario) == planner.plan(*scenario)


@FAST
@given(scenarios(), st.data())
def test_more_consumer_replicas_never_raise_a_workers_share(scenario, data):
    budget, bouncer, consumers = scenario
    index = data.draw(st.integers(0, len(consumers) - 1))
    more = data.draw(st.integers(1, 500))
    grown = list(consumers)
    grown[index] = dataclasses.replace(grown[index], replicas=grown[index].replicas + more)
    before = planner.plan(budget, bouncer, consumers)
    after = planner.plan(budget, bouncer, grown)
    old, new = before.consumers[index], after.consumers[index]
    if old.replicas > 0:
        # The server share of one worker: server_total / (replicas x workers).
        assert new.server_total * old.replicas <= old.server_total * new.replicas
        for a, b in zip(before.consumers, after.consumers, strict=True):
            assert b.server_pool == a.server_pool  # the same consumers split the same pods
            assert b.share <= a.share  # client shares only shrink to fit more pods


@FAST
@given(scenarios(), st.data())
def test_more_pgbouncer_replicas_never_raise_an_alias_pool(scenario, data):
    budget, bouncer, consumers = scenario
    room = budget.available - bouncer.pods
    if room < 1:
        return
    grown = dataclasses.replace(
        bouncer, replicas=bouncer.replicas + data.draw(st.integers(1, room))
    )
    before = planner.plan(budget, bouncer, consumers)
    after = planner.plan(budget, grown, consumers)
    for a, b in zip(before.consumers, after.consumers, strict=True):
        assert b.server_pool <= a.server_pool


# ------------------------------------------------------------------ worked examples


@pytest.mark.parametrize("overflow", ["none", "quarter"])
@pytest.mark.parametrize("app_surge", [0, 2])  # 2 = the Deployment's default maxSurge 25% of 6
def test_chart_defaults_use_the_budget(overflow, app_surge):
    # maxConnections 100, reserved 10, 2 PgBouncer replicas without surge, 6 app pods x 4
    # async workers. The old planner (PgBouncer surge 1) gave every worker 1: 24 of 90 at once,
    # utilization 0.27, and one busy pod 4 of 90.
    app = make_consumer(replicas=6, workers=4, surge=app_surge, overflow=overflow)
    result = planner.plan(planner.Budget(100, 10), planner.PgBouncer(2), [app])
    planned = result.consumer("app")
    assert not result.overcommitted
    assert result.pgbouncer.max_db_connections == result.pgbouncer.max_user_connections == 45
    assert planned.server_pool == 45 and planned.server_total == 90
    assert (planned.share, planned.cap) == (23, planner.ASYNC_WORKER_CAP)
    assert result.utilization >= 0.9
    # All load on one pod of six: its 4 workers can hold most of the consumer's server share.
    assert min(planned.per_pod, planned.server_total) >= 0.8 * planned.server_total
    assert result.client_total == (6 + app_surge) * 4 * 23 <= result.client_limit == 2000


def test_readme_example():
    result = planner.plan(
        planner.Budget(200, 20),
        planner.PgBouncer(2),
        [
            make_consumer("web", replicas=6, workers=4, weight=3, surge=2),
            make_consumer("worker", replicas=3, workers=2, surge=1),
        ],
    )
    web, worker = result.consumers
    assert (web.server_pool, worker.server_pool) == (68, 22)  # 3:1 of 90 per PgBouncer pod
    assert (web.share, worker.share) == (34, 22)
    assert result.utilization == 1.0
    assert result.client_total == 8 * 4 * 34 + 4 * 2 * 22 <= result.client_limit


def test_worked_example_two_consumers_by_weight():
    result = planner.plan(
        planner.Budget(100, 10),
        planner.PgBouncer(2),
        [
            make_consumer("web", replicas=4, workers=4, weight=3),
            make_consumer("worker", replicas=2, workers=1),
        ],
    )
    assert result.pgbouncer.max_db_connections == 45
    assert result.capacity == 90
    web, worker = result.consumers
    assert (web.server_pool, worker.server_pool) == (34, 11)  # 33.75 and 11.25
    assert (web.pool_size, web.per_pod) == (17, 68)  # ceil(34 x 2 / 4)
    assert worker.pool_size == 22  # one worker can use its consumer's whole share
    assert "Budget 90 = max_connections 100 - reserved 10." in result.explanation
    assert "web (weight 3) 34, worker (weight 1) 11" in result.explanation


def test_a_consumer_scaled_to_zero_keeps_an_alias_of_one_outside_the_split():
    result = planner.plan(
        planner.Budget(100, 10),
        planner.PgBouncer(2),
        [make_consumer(replicas=6, workers=4), make_consumer("batch", replicas=0)],
    )
    assert result.consumer("app").server_pool == 45
    assert result.consumer("batch").server_pool == 1
    assert "batch (weight 1) 1 (no replicas: outside the split)" in result.explanation


def test_zero_replicas_is_a_valid_plan():
    result = planner.plan(
        planner.Budget(100, 10), planner.PgBouncer(0), [make_consumer(replicas=0)]
    )
    assert not result.overcommitted
    assert result.consumers[0].pool_size == 1
    assert result.client_total == 0
    assert result.pgbouncer.max_db_connections == 90
    assert result.utilization == 0


def test_threads_and_max_pool_per_worker_cap_the_share():
    budget, bouncer = planner.Budget(100, 10), planner.PgBouncer(2)
    threaded = planner.plan(budget, bouncer, [make_consumer(threads=8)]).consumers[0]
    assert (threaded.cap, threaded.share) == (8, 8)
    capped = planner.plan(budget, bouncer, [make_consumer(max_pool_per_worker=10)]).consumers[0]
    assert (capped.cap, capped.share) == (10, 10)
    both = make_consumer(threads=32, max_pool_per_worker=10)
    assert both.cap == 10  # a stated maximum is never exceeded
    assert make_consumer().cap == planner.ASYNC_WORKER_CAP


def test_shares_shrink_largest_first_to_fit_the_client_slots():
    result = planner.plan(
        planner.Budget(200),
        planner.PgBouncer(1, max_client_conn=30),
        [
            make_consumer("big", replicas=2, workers=1, weight=3),  # wants 64 (cap)
            make_consumer("small", replicas=2, workers=1),  # wants 50
        ],
    )
    big, small = result.consumers
    assert not result.overcommitted
    assert result.client_total == 30
    assert (big.share, small.share) == (8, 7)  # levelled from the top, lower weight first
    assert "client total 30 <= limit 30" in result.explanation


def test_server_side_overcommit_says_what_to_change():
    consumers = [make_consumer(f"c{i}", replicas=1, workers=1) for i in range(10)]
    result = planner.plan(planner.Budget(20, 2), planner.PgBouncer(2), consumers)
    assert result.overcommitted and result.server_short and not result.client_short
    assert result.pgbouncer.max_db_connections == 9
    assert all(c.server_pool == 1 for c in result.consumers)
    needed = planner.needed_max_connections(result)
    assert needed == 22
    assert f"Raise maxConnections to at least {needed}" in result.explanation
    assert "server side" in result.explanation and "client side" not in result.explanation
    assert not planner.plan(
        planner.Budget(needed, 2), planner.PgBouncer(2), consumers
    ).overcommitted


def test_client_side_overcommit_says_what_to_change():
    consumers = [make_consumer(replicas=20, workers=2)]
    result = planner.plan(planner.Budget(100), planner.PgBouncer(2, max_client_conn=10), consumers)
    assert result.overcommitted and result.client_short and not result.server_short
    assert result.client_limit == 20 and result.client_total == 40
    assert result.consumers[0].share == 1
    assert "Raise maxClientConn to at least 20" in result.explanation
    assert "server side" not in result.explanation
    fixed = planner.plan(planner.Budget(100), planner.PgBouncer(2, max_client_conn=20), consumers)
    assert not fixed.overcommitted


@pytest.mark.parametrize(
    ("policy", "expected"), [("none", (8, 0)), ("quarter", (6, 2)), ("half", (4, 4))]
)
def test_overflow_policy_splits_the_share(policy, expected):
    result = planner.plan(
        planner.Budget(8),
        planner.PgBouncer(1),
        [make_consumer(replicas=1, workers=1, overflow=policy)],
    )
    assert (result.consumers[0].pool_size, result.consumers[0].max_overflow) == expected


def test_surge_costs_client_connections_only():
    budget, bouncer = planner.Budget(40), planner.PgBouncer(1, max_client_conn=1000)
    steady = planner.plan(budget, bouncer, [make_consumer(replicas=4, workers=1)])
    rolling = planner.plan(budget, bouncer, [make_consumer(replicas=4, workers=1, surge=4)])
    assert steady.consumers[0].share == rolling.consumers[0].share == 40
    assert rolling.client_total == 2 * steady.client_total


@pytest.mark.parametrize(
    ("seats", "weights", "expected"),
    [
        (45, [3, 1], [34, 11]),
        (90, [3, 1], [68, 22]),
        (3, [10, 1, 1], [1, 1, 1]),  # the minimum of 1 wins over the weights
        (2, [1, 1, 1], [1, 1, 1]),  # fewer seats than parties: 1 each (overcommitted)
        (10, [1, 1, 1], [4, 3, 3]),  # ties: the earlier party
        (7, [], []),
    ],
)
def test_apportion(seats, weights, expected):
    assert planner.apportion(seats, weights) == expected


@pytest.mark.parametrize(
    ("replicas", "strategy", "max_surge", "expected"),
    [
        (4, "RollingUpdate", None, 1),
        (10, "RollingUpdate", "25%", 3),
        (0, "RollingUpdate", "25%", 0),
        (8, "RollingUpdate", 2, 2),
        (8, "RollingUpdate", "3", 3),
        (8, "Recreate", "50%", 0),
    ],
)
def test_resolve_surge_like_kubernetes(replicas, strategy, max_surge, expected):
    assert planner.resolve_surge(replicas, strategy, max_surge) == expected


@pytest.mark.parametrize("max_surge", ["x%", "-5%", "abc", -1, 1.5])
def test_resolve_surge_rejects_nonsense(max_surge):
    with pytest.raises(planner.PlannerError) as info:
        planner.resolve_surge(4, "RollingUpdate", max_surge)
    assert info.value.field == "maxSurge"


@pytest.mark.parametrize(
    ("budget", "bouncer", "consumers", "field"),
    [
        (planner.Budget(0), planner.PgBouncer(1), [make_consumer()], "maxConnections"),
        (planner.Budget(10, 10), planner.PgBouncer(1), [make_consumer()], "reserved"),
        (planner.Budget(10, -1), planner.PgBouncer(1), [make_consumer()], "reserved"),
        (planner.Budget(10), planner.PgBouncer(-1), [make_consumer()], "pgbouncer.replicas"),
        (planner.Budget(3), planner.PgBouncer(3, 1), [make_consumer()], "pgbouncer.replicas"),
        (planner.Budget(10), planner.PgBouncer(1), [], "consumers"),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(workers=0)],
            "consumers[app].workers",
        ),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(replicas=-2)],
            "consumers[app].replicas",
        ),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(weight=0)],
            "consumers[app].weight",
        ),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(overflow="lots")],
            "consumers[app].overflow",
        ),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(), make_consumer()],
            "consumers[app]",
        ),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(threads=-1)],
            "consumers[app].threads",
        ),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(max_pool_per_worker=-3)],
            "consumers[app].max_pool_per_worker",
        ),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer(threads=True)],
            "consumers[app].threads",
        ),
        (planner.Budget(10), planner.PgBouncer(1), [make_consumer("Web")], "consumers[Web].name"),
        (
            planner.Budget(10),
            planner.PgBouncer(1),
            [make_consumer("pgbouncer")],
            "consumers[pgbouncer].name",
        ),
    ],
)
def test_bad_input_names_the_field(budget, bouncer, consumers, field):
    with pytest.raises(planner.PlannerError) as info:
        planner.plan(budget, bouncer, consumers)
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")


# ------------------------------------------------------------------ PgBouncer pods over time


class Fleet:
    """A PgBouncer Deployment as the Deployment controller runs it, seen by the operator.

    Every pod holds the ``max_db_connections`` of the sizing file it last read. After each change
    the operator sees, it plans with the pods that exist, and the pods read the new file (the
    kubelet refresh). New pods start with the current file. With ``terminating_reads=False`` a
    terminating pod keeps the limit it had when it started terminating (checked for
    scale-downs: the survivors are raised only once the terminating pods are gone).
    """

    def __init__(self, available, replicas, max_surge, terminating_reads=True):
        self.available, self.max_surge = available, max_surge
        self.terminating_reads = terminating_reads
        self.replicas = replicas
        self.live: list[int] = []
        self.terminating: list[int] = []
        self.limit = 0
        self.infeasible = False
        self.limits_seen: list[tuple[int, int]] = []
        self.observe()
        self.live = [self.limit] * replicas
        self.observe()

    @property
    def surge(self):
        return planner.resolve_surge(self.replicas, "RollingUpdate", self.max_surge)

    def bouncer(self):
        # What the operator records: the limit each pod had when it was first seen terminating.
        held = () if self.terminating_reads else tuple(self.terminating)
        return planner.PgBouncer(
            self.replicas,
            self.surge,
            live=len(self.live),
            terminating=len(self.terminating),
            held=held,
        )

    def held(self):
        return sum(self.live) + sum(self.terminating)

    def check(self):
        if self.infeasible:
            return
        assert self.held() <= self.available, (self.live, self.terminating, self.limit)

    def observe(self):
        """The operator plans for what it sees; live pods read the new file."""
        self.check()  # what the controller just did, with the limits the pods hold
        sizing = planner.safe_pgbouncer(self.available, self.bouncer())
        b = self.bouncer()
        if not sizing.fits:
            # Only when terminating pods keep so much that even 1 per other pod cannot fit
            # (e.g. scaled to 0 and back while the last pod drains the whole budget): the
            # planner says so, and PostgreSQL's role limit is the bound until they are gone.
            assert not self.terminating_reads
            assert planner.held_total(b.pods, b.held, 1) > self.available
            assert sizing.pgbouncer.max_db_connections == 1
            self.infeasible = True
        else:
            self.infeasible = False
        assert b.pods >= len(self.live) + len(self.terminating)
        if sizing.fits:
            assert b.pods * sizing.pgbouncer.max_db_connections <= self.available
            assert planner.held_total(b.pods, b.held, sizing.pgbouncer.max_db_connections) <= (
                self.available
            )
        self.limit = sizing.pgbouncer.max_db_connections
        self.live = [self.limit] * len(self.live)
        if self.terminating_reads:
            self.terminating = [self.limit] * len(self.terminating)
        self.limits_seen.append((len(self.terminating), self.limit))
        self.check()

    def scale(self, replicas):
        self.replicas = replicas
        self.observe()  # the Deployment's new spec
        if len(self.live) < replicas:
            self.live += [self.limit] * (replicas - len(self.live))
        elif len(self.live) > replicas:
            gone = len(self.live) - replicas
            self.terminating += self.live[:gone]
            self.live = self.live[gone:]
        self.observe()  # the pods appearing or starting to terminate

    def rollout_step(self):
        new = max(1, self.replicas + self.surge - len(self.live)) if self.replicas else 0
        new = min(new, self.replicas + self.surge - len(self.live))
        if new > 0:
            self.live += [self.limit] * new
            self.observe()
        old = len(self.live) - self.replicas
        if old > 0:
            self.terminating += self.live[:old]
            self.live = self.live[old:]
            self.observe()

    def finish_terminating(self, index):
        if self.terminating:
            self.terminating.pop(index % len(self.terminating))
            self.observe()


@st.composite
def fleets(draw):
    max_surge = draw(st.sampled_from([0, 1, 2, "25%", "50%", "100%"]))
    replicas = draw(st.integers(1, 6))
    # Enough budget for the largest fleet 25 operations can make (8 + 8 surge + 200 terminating).
    available = draw(st.integers(220, 2000))
    return available, replicas, max_surge


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("scale"), st.integers(0, 8)),
        st.tuples(st.just("rollout"), st.just(0)),
        st.tuples(st.just("gone"), st.integers(0, 20)),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), OPERATIONS, st.booleans())
def test_pods_that_may_hold_times_max_db_never_exceed_the_budget(fleet, operations, reads):
    # reads=False: terminating pods never read a new file and keep the limit they had, which
    # the operator passes as `held` (a rollout's surge pod must not push the total over).
    model = Fleet(*fleet, terminating_reads=reads)
    for op, arg in operations:
        if op == "scale":
            model.scale(arg)
        elif op == "rollout":
            model.rollout_step()
        else:
            model.finish_terminating(arg)
    while model.terminating:
        model.finish_terminating(0)


def test_scale_down_raises_the_survivors_only_after_the_terminating_pods_are_gone():
    model = Fleet(90, 4, 1, terminating_reads=False)
    assert model.limit == 90 // 5
    model.scale(2)
    assert model.held() == 4 * (90 // 5)  # never raised while the scale-down is pending
    # Two terminating pods still hold their connections: the survivors stay low.
    assert len(model.terminating) == 2 and model.limit == 90 // 5
    model.finish_terminating(0)
    assert model.limit == 90 // 4
    model.finish_terminating(0)
    assert not model.terminating and model.limit == 90 // 3
    # While any pod terminates, no pod gets the limit of the 3 pods (2 + surge) that will stay.
    during = [limit for terminating, limit in model.limits_seen if terminating]
    assert max(during) <= 90 // 4 < 90 // 3
    assert model.limits_seen[-1] == (0, 90 // 3)


def test_scale_up_beyond_the_surge_plans_the_new_count_first():
    model = Fleet(90, 2, 1)
    assert model.limit == 30
    model.scale(5)
    assert model.limit == 90 // 6  # 5 + maxSurge 1, planned before the new pods appear
    assert len(model.live) * model.limit <= 90


def test_terminating_pods_count_against_the_budget():
    bouncer = planner.PgBouncer(2, 1, live=3, terminating=2)
    assert bouncer.pods == 5
    result = planner.plan(planner.Budget(100, 10), bouncer, [make_consumer()])
    assert result.pgbouncer.max_db_connections == 18
    assert result.pgbouncer_pods == 5 and result.server_total == 90
    assert "5 pods may hold server connections" in result.explanation
    # More live pods than replicas + surge: a scale-down the controller has not carried out;
    # the surge stays counted, so these pods are not raised just before they terminate.
    assert planner.PgBouncer(2, 1, live=4).pods == 5
    # Terminating pods that keep a larger limit: the others share what is left.
    held = planner.PgBouncer(2, 1, live=2, terminating=1, held=(30,))
    sizing = planner.safe_pgbouncer(90, held)
    assert held.pods == 4 and sizing.fits
    assert sizing.pgbouncer.max_db_connections == 20  # 3 x 20 + 30 = 90
    assert planner.plan(planner.Budget(100, 10), held, [make_consumer()]).server_total == 90


@pytest.mark.parametrize(
    ("available", "pods", "limit", "fits"),
    [(90, 5, 18, True), (90, 95, 1, False), (5, 5, 1, True), (0, 3, 1, False), (-4, 1, 1, False)],
)
def test_safe_sizing_serves_and_says_when_even_one_does_not_fit(available, pods, limit, fits):
    sizing = planner.safe_pgbouncer(available, planner.PgBouncer(pods))
    assert sizing.pgbouncer.max_db_connections == limit
    assert sizing.pgbouncer.default_pool_size + sizing.pgbouncer.reserve_pool_size == limit
    assert sizing.fits is fits
    if not fits:
        assert "PostgreSQL's connection limit" in sizing.message
        assert "raise maxConnections" in sizing.message
