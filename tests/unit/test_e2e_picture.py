"""tests/e2e/picture.py: the e2e scale run's PNG (connections per consumer, budget, events)."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "tests" / "e2e" / "picture.py"
_spec = importlib.util.spec_from_file_location("poolwarden_e2e_picture", _PATH)
picture = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = picture
_spec.loader.exec_module(picture)

DEPLOYMENTS = {"pw-poolwarden-app": "app", "pw-worker": "worker"}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_pods_are_grouped_into_their_consumers():
    samples = [
        (100.0, picture.pod_counts("pw-poolwarden-app-6d9f7-abcde:3,pw-poolwarden-app-6d9f7-"
                                   "fghij:2,pw-worker-5c4b-zzzzz:1,:4,psql:1")),
        (100.5, picture.pod_counts("")),
    ]
    assert picture.by_consumer(samples, DEPLOYMENTS) == [
        (100.0, {"app": 5, "worker": 1, "other": 5}),
        (100.5, {}),
    ]


def test_a_sampler_field_that_does_not_parse_is_skipped():
    assert picture.pod_counts("a-1-x:2,garbage,b-2-y:x,:1") == {"a-1-x": 2, "": 1}


def test_the_png_is_written_at_its_size(tmp_path):
    t0 = 1_764_745_200.0
    samples = [(t0 + i / 2, {"app": min(30, i), "worker": 5, "other": i % 2})
               for i in range(120)]  # fmt: skip
    events = [(t0 + 10, "app -> 6"), (t0 + 30, "pgbouncer pod deleted"), (t0 + 45, "app -> 1")]
    path = picture.draw(tmp_path / "out" / "scale.png", samples, 30, events, title="scale run")
    assert path == tmp_path / "out" / "scale.png"
    assert png_size(path) == (picture.SIZE[0] * picture.DPI, picture.SIZE[1] * picture.DPI)
    assert path.stat().st_size > 10_000  # a drawn chart, not an empty canvas


def test_no_samples_still_gives_a_picture(tmp_path):
    path = picture.draw(tmp_path / "empty.png", [], 30, [(5.0, "app -> 6")])
    assert png_size(path) == (1000, 480)
