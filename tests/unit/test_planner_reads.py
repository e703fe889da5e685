"""The read plan (standbys, a budget per server): hypothesis invariants, worked examples and the
`poolwarden plan --read-replicas` flags."""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from poolwarden import cli, planner

READS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def read_scenarios(draw):
    """The write planner's ranges (tests/unit/test_planner.py) plus 1..5 standbys whose
    max_connections is often the primary's (a hot standby needs at least the primary's)."""
    max_connections = draw(st.integers(1, 10_000))
    reserved = draw(st.integers(0, max_connections - 1))
    available = max_connections - reserved
    replicas = draw(st.integers(0, min(50, available)))
    surge = draw(st.integers(0, available - replicas))
    bouncer = planner.PgBouncer(replicas, surge, draw(st.integers(1, 5000)))
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
        for i in range(draw(st.integers(1, 10)))
    ]
    if draw(st.booleans()):  # small fleets: the feasible branch is common
        consumers = [
            dataclasses.replace(c, replicas=c.replicas % 7, surge=c.surge % 3) for c in consumers
        ]
    read_max = draw(st.one_of(st.just(max_connections), st.integers(1, 10_000)))
    read_reserved = draw(
        st.one_of(st.just(min(reserved, read_max - 1)), st.integers(0, read_max - 1))
    )
    reads = planner.ReadServers(draw(st.integers(1, 5)), read_max, read_reserved)
    return planner.Budget(max_connections, reserved), bouncer, consumers, reads


def planned(scenario):
    result = planner.plan_with_reads(*scenario)
    assert result.read is not None
    return result.write, result.read


def active(read):
    return [c for c in read.consumers if c.replicas > 0]


@READS
@given(read_scenarios())
def test_the_write_plan_is_exactly_the_planners(scenario):
    budget, bouncer, consumers, _ = scenario
    write, _ = planned(scenario)
    assert write == planner.plan(budget, bouncer, consumers)
    assert write.to_dict() == planner.plan(budget, bouncer, consumers).to_dict()


@READS
@given(read_scenarios())
def test_read_connections_on_any_one_standby_stay_within_its_budget(scenario):
    _, bouncer, _, reads = scenario
    _, read = planned(scenario)
    assert read.budget == reads.available
    assert read.pgbouncer_pods == bouncer.pods
    # Worst case: every read server connection of every PgBouncer pod that may hold connections
    # lands on the same standby.
    per_pod = sum(c.server_pool for c in read.consumers)
    assert per_pod <= read.max_db_connections
    assert bouncer.pods * per_pod <= bouncer.pods * read.max_db_connections <= reads.available
    assert read.server_total == bouncer.pods * read.max_db_connections <= read.budget
    assert read.capacity <= read.budget
    assert all(0 <= c.server_pool <= read.max_db_connections for c in read.consumers)
    assert all(c.server_pool == 0 for c in read.consumers if c.replicas == 0)
    assert all(c.server_total == c.server_pool * bouncer.replicas for c in read.consumers)


@READS
@given(read_scenarios())
def test_every_active_consumer_gets_a_read_connection_per_pod_when_the_budget_allows(scenario):
    _, read = planned(scenario)
    group = active(read)
    event("read budget gives 1 each" if read.max_db_connections >= len(group) else "read short")
    if read.max_db_connections >= len(group):
        assert all(c.server_pool >= 1 for c in group)
        assert sum(c.server_pool for c in group) == (read.max_db_connections if group else 0)
        assert not read.server_short
    else:
        # The heaviest get 1 each, the rest read from the primary; the budget is never exceeded.
        given_one = [c for c in group if c.server_pool == 1]
        left_out = [c for c in group if c.server_pool == 0]
        assert len(given_one) == read.max_db_connections and len(left_out) > 0
        assert min((c.weight for c in given_one), default=10) >= max(c.weight for c in left_out)
        assert read.server_short and read.overcommitted
        needed = planner.needed_read_max_connections(read)
        assert f"maxConnections to at least {needed}" in read.explanation
        _, again = planned(
            (*scenario[:3], dataclasses.replace(scenario[3], max_connections=needed))
        )
        assert not again.server_short


@READS
@given(read_scenarios())
def test_read_pools_follow_the_weights_within_one_connection(scenario):
    _, read = planned(scenario)
    max_db = read.max_db_connections
    group = active(read)
    total = sum(c.weight for c in group)
    if not group or max_db < len(group):
        return
    for c in group:
        quota = Fraction(max_db * c.weight, total)
        assert c.server_pool < quota + 1, (c, quota)
        if all(max_db * other.weight >= total for other in group):
            assert abs(c.server_pool - quota) < 1, (c, quota)


@READS
@given(read_scenarios())
def test_a_workers_read_pool_is_capped_like_the_write_side(scenario):
    _, _, consumers, _ = scenario
    _, read = planned(scenario)
    for c, given_consumer in zip(read.consumers, consumers, strict=True):
        assert c.cap == given_consumer.cap  # threads for threaded workers, the async cap
        if c.server_pool == 0:
            assert c.share == c.pool_size == c.max_overflow == 0  # reads on the primary
            continue
        assert c.pool_size >= 1 and c.max_overflow >= 0
        assert 1 <= c.share <= max(1, min(c.cap, math.ceil(c.server_total / c.workers)))
        if given_consumer.threads:
            assert c.share <= given_consumer.threads
        divisor = planner.OVERFLOW_FRACTIONS[c.overflow]
        assert c.max_overflow == (c.share // divisor if divisor else 0)


@READS
@given(read_scenarios())
def test_read_clients_fit_the_slots_the_write_plan_leaves(scenario):
    write, read = planned(scenario)
    assert read.client_limit == max(0, write.client_limit - write.client_total)
    assert read.client_total == sum(c.peak_total for c in read.consumers)
    assert read.overcommitted == (read.server_short or read.client_short)
    event("read client short" if read.client_short else "read clients fit")
    if read.client_short:
        assert all(c.share <= 1 for c in read.consumers)
    else:
        assert read.client_total <= read.client_limit
        if not write.client_short:
            assert write.client_total + read.client_total <= write.client_limit
    assert 0 <= read.utilization <= 1


@READS
@given(read_scenarios(), st.data())
def test_more_standbys_never_raise_a_read_pool(scenario, data):
    budget, bouncer, consumers, reads = scenario
    more = dataclasses.replace(reads, replicas=reads.replicas + data.draw(st.integers(1, 10)))
    _, before = planned(scenario)
    _, after = planned((budget, bouncer, consumers, more))
    for a, b in zip(before.consumers, after.consumers, strict=True):
        assert b.server_pool <= a.server_pool and b.share <= a.share
    assert after.server_total <= after.budget


@READS
@given(read_scenarios(), st.data())
def test_more_consumer_replicas_never_raise_a_read_pool(scenario, data):
    budget, bouncer, consumers, reads = scenario
    index = data.draw(st.integers(0, len(consumers) - 1))
    grown = list(consumers)
    grown[index] = dataclasses.replace(
        grown[index], replicas=grown[index].replicas + data.draw(st.integers(1, 500))
    )
    _, before = planned(scenario)
    _, after = planned((budget, bouncer, grown, reads))
    old, new = before.consumers[index], after.consumers[index]
    if old.replicas > 0:
        assert new.server_total * old.replicas <= old.server_total * new.replicas
        for a, b in zip(before.consumers, after.consumers, strict=True):
            assert b.server_pool == a.server_pool  # the same consumers split the same pods
            assert b.share <= a.share


@READS
@given(read_scenarios(), st.data())
def test_more_pgbouncer_replicas_never_raise_a_read_pool(scenario, data):
    budget, bouncer, consumers, reads = scenario
    room = budget.available - bouncer.pods
    if room < 1:
        return
    grown = dataclasses.replace(
        bouncer, replicas=bouncer.replicas + data.draw(st.integers(1, room))
    )
    _, before = planned(scenario)
    _, after = planned((budget, grown, consumers, reads))
    for a, b in zip(before.consumers, after.consumers, strict=True):
        assert b.server_pool <= a.server_pool


@READS
@given(read_scenarios())
def test_the_read_plan_is_deterministic_and_none_without_standbys(scenario):
    assert planner.plan_with_reads(*scenario) == planner.plan_with_reads(*scenario)
    budget, bouncer, consumers, reads = scenario
    none = planner.plan_with_reads(
        budget, bouncer, consumers, dataclasses.replace(reads, replicas=0)
    )
    assert none.read is None and none.write == planner.plan(budget, bouncer, consumers)


# ------------------------------------------------------------------ worked examples


def two_consumers():
    return [
        planner.Consumer("web", replicas=4, workers=4, weight=3),
        planner.Consumer("worker", replicas=2, threads=8),
    ]


def test_each_standby_gets_the_whole_read_budget_in_the_worst_case():
    result = planner.plan_with_reads(
        planner.Budget(100, 10), planner.PgBouncer(2), two_consumers(), planner.ReadServers(2, 100)
    )
    read = result.read
    assert read.budget == 100 and read.max_db_connections == 50 and read.server_total == 100
    web, worker = read.consumers
    assert (web.server_pool, worker.server_pool) == (38, 12)  # 37.5 / 12.5 exact
    assert (web.share, worker.share) == (19, 8)  # ceil(76 / 4); threads cap the worker
    assert read.client_limit == 2000 - result.write.client_total
    assert not read.overcommitted
    assert "at most 100 on one standby" in read.explanation


def test_short_read_budget_gives_the_heaviest_one_each_and_the_rest_read_the_primary():
    consumers = [
        planner.Consumer("a", replicas=1, weight=1),
        planner.Consumer("b", replicas=1, weight=5),
        planner.Consumer("c", replicas=1, weight=5),
        planner.Consumer("idle", replicas=0, weight=9),
    ]
    read = planner.plan_with_reads(
        planner.Budget(100), planner.PgBouncer(3), consumers, planner.ReadServers(1, 7, 1)
    ).read
    assert read.max_db_connections == 2  # 6 // 3 pods
    assert [c.server_pool for c in read.consumers] == [0, 1, 1, 0]
    assert [c.share for c in read.consumers] == [0, 3, 3, 0]
    assert read.server_short and read.overcommitted
    assert planner.needed_read_max_connections(read) == 1 + 3 * 3
    assert "a (weight 1) 0 (reads on the primary)" in read.explanation


def test_more_pgbouncer_pods_than_read_connections_keeps_reads_on_the_primary():
    read = planner.plan_with_reads(
        planner.Budget(100),
        planner.PgBouncer(4, 1),
        [planner.Consumer("app", replicas=2)],
        planner.ReadServers(3, 4),
    ).read
    assert read.pgbouncer_pods == 5 and read.max_db_connections == 0 and read.server_total == 0
    assert read.consumer("app").server_pool == 0 and read.server_short


@pytest.mark.parametrize(
    ("reads", "field"),
    [
        (planner.ReadServers(-1, 100), "readReplicas.replicas"),
        (planner.ReadServers(1, 0), "readReplicas.maxConnections"),
        (planner.ReadServers(1, 10, 10), "readReplicas.reserved"),
        (planner.ReadServers(1, 10, -1), "readReplicas.reserved"),
        (planner.ReadServers(True, 10), "readReplicas.replicas"),
    ],
)
def test_bad_read_input_names_the_field(reads, field):
    with pytest.raises(planner.PlannerError) as info:
        planner.plan_with_reads(planner.Budget(100), planner.PgBouncer(1), two_consumers(), reads)
    assert info.value.field == field


# ------------------------------------------------------------------ poolwarden plan


EXAMPLE = [
    "plan", "--max-connections", "100", "--reserved", "10", "--pgbouncer-replicas", "2",
    "--consumer", "web:replicas=4,workers=4,weight=3", "--consumer", "worker:replicas=2,threads=8",
]  # fmt: skip


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_without_read_replicas_the_output_is_the_write_plans_alone(capsys):
    _, plain, _ = run(capsys, *EXAMPLE, "--output", "json")
    _, zero, _ = run(capsys, *EXAMPLE, "--read-replicas", "0", "--output", "json")
    assert plain == zero and "read" not in json.loads(plain)
    _, table, _ = run(capsys, *EXAMPLE)
    assert "read" not in table.split("\n\n")[-1] and "standby" not in table


def test_read_plan_is_printed_beside_the_write_plan(capsys):
    code, out, _ = run(capsys, *EXAMPLE, "--read-replicas", "2", "--read-max-connections", "200",
                       "--read-reserved", "20")  # fmt: skip
    assert code == 0
    _, write_only, _ = run(capsys, *EXAMPLE)
    assert out.startswith(write_only)  # the write plan's table, unchanged
    lines = out[len(write_only) :].splitlines()
    assert lines[1].startswith("read: 2 standby(s), budget 180 each")
    assert "read aliases per PgBouncer pod: max_db_connections 90" in lines
    web = next(line for line in lines if line.startswith("web "))
    assert web.split() == ["web", "4", "0", "4", "3", "68", "136", "0", "64", "34", "0", "136"]
    assert lines[-1].startswith("Read side: 2 standby(s)")


def test_read_plan_json(capsys):
    code, out, _ = run(capsys, *EXAMPLE, "--read-replicas", "1", "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert data["budget"] == 90 and data["server_total"] == 90  # the write plan's keys stay
    read = data["read"]
    assert read["budget"] == 90 and read["max_db_connections"] == 45 and read["server_total"] == 90
    web, worker = read["consumers"]
    assert (web["server_pool"], web["share"], worker["server_pool"], worker["share"]) == (
        34, 17, 11, 8,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--read-replicas", "-1"], "--read-replicas"),
        (["--read-replicas", "1", "--read-max-connections", "0"], "--read-max-connections"),
        (["--read-replicas", "1", "--read-reserved", "100"], "--read-reserved"),
        (["--read-replicas", "1", "--read-reserved", "-2"], "--read-reserved"),
        (["--read-replicas", "x"], "--read-replicas"),
    ],
)
def test_bad_read_flags_exit_2_naming_the_flag(capsys, extra, flag):
    with pytest.raises(SystemExit) as info:
        cli.main([*EXAMPLE, *extra])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err
