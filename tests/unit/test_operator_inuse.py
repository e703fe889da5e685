"""In use per consumer: the window, the peaks, the bounded status.inUse and its write rate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolwarden_operator import applied, bouncers, config, inuse, metrics


def counts(active=0, idle=0, waiting=0, clients=None):
    return inuse.Counts(active, idle, active if clients is None else clients, waiting)


def test_each_planned_consumer_is_its_alias_and_other_aliases_are_not_consumers():
    pools = {"app": bouncers.Pool(sv_active=3, sv_idle=1, sv_used=1, sv_login=1, cl_active=3,
                                  cl_waiting=2),
             "pgbouncer": bouncers.Pool(cl_active=1), "shop": bouncers.Pool(sv_idle=2)}
    assert inuse.counts(["worker", "app"], pools) == {
        "app": inuse.Counts(server_active=3, server_idle=3, clients_active=3, clients_waiting=2),
        "worker": inuse.Counts(),
    }


def test_peaks_are_over_the_window_only():
    w = inuse.Window(seconds=300)
    w.add(0, {"app": counts(active=8, waiting=3)})
    w.add(200, {"app": counts(active=2, idle=1)})
    assert w.peaks() == {"app": (8, 3)}
    w.add(301, {"app": counts(active=1)})  # the first sample left the window
    assert w.peaks() == {"app": (3, 0)}


def test_status_in_use_has_the_contracts_shape():
    w = inuse.Window(seconds=300)
    w.add(0, {"app": counts(active=7, idle=1, waiting=4), "batch": counts(active=1)})
    now = {"app": counts(active=5, idle=2), "batch": counts(active=0, idle=1, waiting=1)}
    w.add(10, now)
    got = inuse.status(w, now, "2026-12-03T07:00:00Z", pods=2)
    assert got == {
        "sampledAt": "2026-12-03T07:00:00Z", "windowSeconds": 300, "pgbouncerPods": 2,
        "serverActive": 5, "serverIdle": 3, "clientsWaiting": 1,
        "consumers": [
            {"name": "app", "serverActive": 5, "serverIdle": 2, "clientsActive": 5,
             "clientsWaiting": 0, "peakServer": 8, "peakWaiting": 4},
            {"name": "batch", "serverActive": 0, "serverIdle": 1, "clientsActive": 0,
             "clientsWaiting": 1, "peakServer": 1, "peakWaiting": 1},
        ],
    }  # fmt: skip


def test_a_patch_goes_out_on_change_and_at_most_every_interval():
    w = inuse.Window(seconds=300)
    w.add(0, {"app": counts(active=1)})
    first = inuse.status(w, {"app": counts(active=1)}, "T0", 1)
    assert inuse.due(first, None, now=0, last=None, interval=60)
    later = inuse.status(w, {"app": counts(active=1)}, "T1", 1)
    assert not inuse.changed(later, first)  # only the time moved: nothing to write
    assert not inuse.due(later, first, now=120, last=0, interval=60)
    w.add(30, {"app": counts(active=2)})
    moved = inuse.status(w, {"app": counts(active=2)}, "T2", 1)
    assert not inuse.due(moved, first, now=30, last=0, interval=60)  # too soon
    assert inuse.due(moved, first, now=60, last=0, interval=60)


SAMPLES = st.lists(
    st.dictionaries(st.sampled_from([f"c{i}" for i in range(15)]),
                    st.builds(inuse.Counts, *(st.integers(0, 500) for _ in range(4))),
                    min_size=1),
    min_size=1, max_size=50,
)  # fmt: skip


@given(SAMPLES, st.floats(1, 30))
def test_status_and_memory_stay_bounded_and_peaks_cover_the_latest(samples, step):
    w = inuse.Window(seconds=60, limit=20)
    for i, sample in enumerate(samples):
        w.add(i * step, sample)
    now = samples[-1]
    got = inuse.status(w, now, "T", 1)
    assert len(w) <= 20
    assert len(got["consumers"]) <= applied.LISTED
    names = [c["name"] for c in got["consumers"]]
    assert names == sorted(names)
    assert got["serverActive"] == sum(c.server_active for c in now.values())
    for c in got["consumers"]:
        assert c["peakServer"] >= c["serverActive"] + c["serverIdle"]
        assert c["peakWaiting"] >= c["clientsWaiting"]


def test_metrics_carry_every_consumer_with_state_labels():
    w = inuse.Window(seconds=300)
    w.add(0, {"app": counts(active=6, idle=1, waiting=2)})
    now = {"app": counts(active=3, idle=1)}
    w.add(5, now)
    got = {(s.name, s.labels): s.value
           for s in metrics.in_use_samples("ns", "shop", now, w.peaks())}
    assert got == {
        (metrics.CONSUMER_SERVER_CONNECTIONS, ("ns", "shop", "app", "active")): 3,
        (metrics.CONSUMER_SERVER_CONNECTIONS, ("ns", "shop", "app", "idle")): 1,
        (metrics.CONSUMER_CLIENTS_WAITING, ("ns", "shop", "app")): 0,
        (metrics.CONSUMER_SERVER_CONNECTIONS_PEAK, ("ns", "shop", "app")): 7,
        (metrics.CONSUMER_CLIENTS_WAITING_PEAK, ("ns", "shop", "app")): 2,
    }
    assert {s for s in metrics.SERVER_STATES} == {"active", "idle"}


def test_ledger_settings_default_and_are_refused_by_name():
    got = config.Settings.from_env({"POOLWARDEN_NAMESPACE": "shop"})
    assert (got.ledger_interval, got.ledger_status_interval, got.ledger_window) == (10, 60, 300)
    for name, value in [("POOLWARDEN_LEDGER_INTERVAL", "0"), ("POOLWARDEN_LEDGER_WINDOW", "nan"),
                        ("POOLWARDEN_LEDGER_STATUS_INTERVAL", "soon")]:
        with pytest.raises(config.ConfigError, match=name):
            config.Settings.from_env({"POOLWARDEN_NAMESPACE": "shop", name: value})
    with pytest.raises(config.ConfigError, match="POOLWARDEN_LEDGER_WINDOW"):
        config.Settings.from_env({"POOLWARDEN_NAMESPACE": "shop", "POOLWARDEN_LEDGER_WINDOW": "5"})
