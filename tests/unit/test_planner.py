"""The planner's invariants (hypothesis over the issue's ranges) and worked examples."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolwarden import planner

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_consumer(name="app", replicas=2, workers=2, weight=1, surge=0, overflow="none"):
    return planner.Consumer(name, replicas, workers, weight, surge, overflow)


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
        )
        for i in range(count)
    ]
    # Small fleets make the feasible branch common; wide ones exercise overcommit.
    if draw(st.booleans()):
        consumers = [
            dataclasses.replace(c, replicas=c.replicas % 7, surge=c.surge % 3) for c in consumers
        ]
    return planner.Budget(max_connections, reserved), bouncer, consumers


@FAST
@given(scenarios())
def test_server_total_never_exceeds_budget(scenario):
    budget, bouncer, consumers = scenario
    result = planner.plan(budget, bouncer, consumers)
    assert result.server_total <= result.budget
    pods = bouncer.replicas + bouncer.surge
    assert pods * result.pgbouncer.max_db_connections <= budget.available
    assert result.pgbouncer.default_pool_size + result.pgbouncer.reserve_pool_size == (
        result.pgbouncer.max_db_connections
    )


@FAST
@given(scenarios())
def test_feasible_plan_fits_every_worker_including_surge(scenario):
    result = planner.plan(*scenario)
    peak = sum(
        (c.replicas + c.surge) * c.workers * (c.pool_size + c.max_overflow)
        for c in result.consumers
    )
    assert peak == result.client_total
    if not result.overcommitted:
        assert result.client_total <= result.capacity <= result.budget
    else:
        assert all(c.pool_size == 1 and c.max_overflow == 0 for c in result.consumers)
        assert "raise maxConnections to at least" in result.explanation


@FAST
@given(scenarios())
def test_every_worker_gets_at_least_one(scenario):
    result = planner.plan(*scenario)
    assert all(c.pool_size >= 1 and c.max_overflow >= 0 for c in result.consumers)
    assert all(c.per_pod == c.workers * (c.pool_size + c.max_overflow) for c in result.consumers)


@FAST
@given(scenarios())
def test_shares_follow_weights_within_one_connection(scenario):
    result = planner.plan(*scenario)
    active = [c for c in result.consumers if c.replicas + c.surge > 0]
    for a in active:
        for b in active:
            if a.share > 1:
                # a is never a whole step ahead of b in weight terms
                assert a.share * b.weight <= (b.share + 1) * a.weight, (a, b)


@FAST
@given(scenarios())
def test_plan_is_deterministic(scenario):
    assert planner.plan(*scenario) == planner.plan(*scenario)


@FAST
@given(scenarios(), st.data())
def test_more_replicas_never_raise_a_pods_share(scenario, data):
    budget, bouncer, consumers = scenario
    index = data.draw(st.integers(0, len(consumers) - 1))
    more = data.draw(st.integers(1, 500))
    grown = list(consumers)
    grown[index] = dataclasses.replace(grown[index], replicas=grown[index].replicas + more)
    before = planner.plan(budget, bouncer, consumers)
    after = planner.plan(budget, bouncer, grown)
    for old, new in zip(before.consumers, after.consumers, strict=True):
        if old.replicas + old.surge == 0:
            continue  # no pod had a share; a consumer without pods is planned at the minimum, 1
        assert new.share <= old.share
        assert new.per_pod <= old.per_pod


def test_zero_replicas_is_a_valid_plan():
    result = planner.plan(
        planner.Budget(100, 10), planner.PgBouncer(0), [make_consumer(replicas=0)]
    )
    assert not result.overcommitted
    assert result.consumers[0].pool_size == 1
    assert result.client_total == 0
    assert result.pgbouncer.max_db_connections == 90


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
    assert (web.pool_size, web.per_pod) == (5, 20)
    assert worker.pool_size == 1
    assert result.client_total == 4 * 20 + 2 * 1 <= 90
    assert "Budget 90 = max_connections 100 - reserved 10." in result.explanation


def test_scaling_a_consumer_up_and_down_moves_its_share():
    budget, bouncer = planner.Budget(100, 10), planner.PgBouncer(1)
    shares = [
        planner.plan(budget, bouncer, [make_consumer(replicas=n)]).consumers[0].pool_size
        for n in (2, 8, 1)
    ]
    assert shares == [22, 5, 45]


def test_overcommitted_plan_says_what_to_change():
    result = planner.plan(
        planner.Budget(20, 2), planner.PgBouncer(2), [make_consumer(replicas=10, workers=4)]
    )
    assert result.overcommitted
    assert result.client_total == 40 > result.capacity
    needed = planner.needed_max_connections(result)
    assert f"raise maxConnections to at least {needed}" in result.explanation
    assert not planner.plan(
        planner.Budget(needed, 2), planner.PgBouncer(2), [make_consumer(replicas=10, workers=4)]
    ).overcommitted


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


def test_surge_counts_against_the_budget():
    budget, bouncer = planner.Budget(40), planner.PgBouncer(1)
    steady = planner.plan(budget, bouncer, [make_consumer(replicas=4, workers=1)])
    rolling = planner.plan(budget, bouncer, [make_consumer(replicas=4, workers=1, surge=4)])
    assert (steady.consumers[0].pool_size, rolling.consumers[0].pool_size) == (10, 5)


def test_max_client_conn_grows_to_the_clients():
    result = planner.plan(
        planner.Budget(500), planner.PgBouncer(1, 0, 10), [make_consumer(replicas=5, workers=2)]
    )
    assert result.pgbouncer.max_client_conn == result.client_total == 500
    assert "max_client_conn was raised to 500" in result.explanation


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
