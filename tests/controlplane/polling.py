"""Bounded polling for the control-plane tests: wait for a condition, fail naming it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], *, timeout: float = 90.0, interval: float = 0.5,
             tolerate: Callable[[Exception], bool] | None = None) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline.

    Exceptions for which `tolerate` returns True count as "not yet" (e.g. a 404 before an
    object exists); any other exception fails the test at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:
            if tolerate is None or not tolerate(error):
                raise
            last = None
        if last:
            return last  # type: ignore[return-value]
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:.0f}s; last seen: {last!r}")
