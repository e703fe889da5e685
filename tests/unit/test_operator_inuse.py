"""In use per consumer: the window, the peaks, the bounded status.inUse and its write rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from poolwarden import pgbouncer_ini
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


CRD = (Path(__file__).resolve().parents[2] / "charts" / "poolwarden" / "crds"
       / "connectionbudgets.poolwarden.io.yaml")
TYPES = {"integer": int, "string": str, "boolean": bool, "object": dict, "array": list}


def kept(value, schema, where="status"):
    """The parts of ``value`` the API server would prune or refuse under ``schema``."""
    problems = []
    kind = schema.get("type")
    if kind and not isinstance(value, TYPES[kind]) or (kind == "integer" and value is True):
        return [f"{where}: {value!r} is not {kind}"]
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, item in value.items():
            if key not in schema.get("properties", {}):
                problems.append(f"{where}.{key}: not in the schema (pruned)")
            else:
                problems += kept(item, schema["properties"][key], f"{where}.{key}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in schema.get("properties", {}):
                problems += kept(item, schema["properties"][key], f"{where}.{key}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{where}: {len(value)} items, at most {schema['maxItems']}")
        for i, item in enumerate(value):
            problems += kept(item, schema.get("items", {}), f"{where}[{i}]")
    return problems


def test_the_crd_keeps_every_ledger_field_the_operator_writes():
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status_schema = schema["properties"]["status"]
    w = inuse.Window(seconds=300)
    now = {f"c{i:02}": inuse.Counts(3, 1, 3, 2) for i in range(12)}
    w.add(0, now)
    scrape = bouncers.parse((Path(__file__).parent / "pgbouncer_exporter_0.10.2.prom").read_text())
    reports = [bouncers.Report(f"pgb-{i:02}", scrape if i % 2 else None, "refused")
               for i in range(12)]
    j = bouncers.judged(reports, pgbouncer_ini.Sizing(1, 12, 0, 100, 12), 4, ["off"])
    status = {
        "inUse": inuse.status(w, now, "2026-12-03T07:00:00Z", 2),
        "applied": {"readyPods": 1, "laggingPods": 0, "lagging": []} | bouncers.summary(j),
        "pgbouncer": {"pods": 12, "readyPods": bouncers.pods_status(j)},
    }
    assert kept(status, status_schema) == []
    assert empty_keys(status_schema) == []  # e.g. a comma in an unquoted flow-style description
    assert kept({"applied": {"nope": 1}}, status_schema) == ["status.applied.nope: not in the "
                                                             "schema (pruned)"]  # fmt: skip
    columns = {c["name"]: c["jsonPath"] for c in
               yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["In-Use"] == ".status.inUse.serverActive"
    assert columns["Waiting"] == ".status.inUse.clientsWaiting"


def empty_keys(schema, where="status"):
    """Schema keys without a value: YAML read ``{type: integer, description: a, b}`` so."""
    found = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            found += [f"{where}.{key}"] if value is None else empty_keys(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += empty_keys(value, f"{where}[{i}]")
    return found


def test_a_budget_that_becomes_invalid_loses_its_in_use_series():
    from poolwarden_operator import sampler

    ledger = metrics.Ledger()
    settings = config.Settings(namespace="shop")
    s = sampler.Sampler(None, ledger, settings)  # type: ignore[arg-type]  (no I/O here)
    key = ("shop", "budget")
    planned = {"spec": {"pgbouncer": {"deployment": "pgb"}},
               "status": {"state": "Ready", "consumers": [{"name": "web"}]}}
    ledger.set(key, [])
    s.update(key, planned)
    ledger.set_in_use(key, metrics.in_use_samples(*key, {"web": inuse.Counts(2)}, {}))

    def in_use():
        return {f.name: f.samples for f in metrics.registry(ledger).collect()}[
            metrics.CONSUMER_SERVER_CONNECTIONS]

    assert len(in_use()) == 2  # active and idle
    s.update(key, {**planned, "status": {"state": "Invalid"}})
    assert in_use() == []
