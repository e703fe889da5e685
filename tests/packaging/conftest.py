"""Packaging tier: the distribution a user installs, built from the tree and installed into a
fresh venv (PyPI or the pip cache for the extras' dependencies)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.packaging)
