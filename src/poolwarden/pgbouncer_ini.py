"""The PgBouncer sizing include: the operator's half of PgBouncer's configuration.

PgBouncer's main ``pgbouncer.ini`` (static, rendered by the PgBouncer image's entrypoint) ends
its ``[pgbouncer]`` section with ``%include /etc/pgbouncer/sizing/sizing.ini``. The operator owns
that include file (ConfigMap key ``sizing.ini``); the PgBouncer container watches it and issues
``RELOAD`` when its bytes change. Format, keys sorted, values integers::

    ; poolwarden sizing for default/app, generation 3. Written by the operator; do not edit.
    default_pool_size = 8
    max_client_conn = 1000
    max_db_connections = 20
    reserve_pool_size = 0

Rendering is deterministic (sorted keys, no timestamps, trailing newline) so that an unchanged
plan never changes the file and never triggers a reload.
"""

from __future__ import annotations

import dataclasses
import re

FILE_NAME = "sizing.ini"
KEYS = ("default_pool_size", "max_client_conn", "max_db_connections", "reserve_pool_size")
_LINE = re.compile(r"^\s*([a-z_]+)\s*=\s*(\S+)\s*$")
MAX_INT = 2**63 - 1
"""The largest number a sizing include may hold (PgBouncer and the budget's status: int64)."""
_MAX_DIGITS = len(str(MAX_INT))
_HEADER_GENERATION = re.compile(r"^; poolwarden sizing for .*, generation (\d+)\.", re.M)


class SizingError(ValueError):
    """A sizing include that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Sizing:
    """Per-PgBouncer-replica limits."""

    default_pool_size: int
    max_db_connections: int
    reserve_pool_size: int
    max_client_conn: int

    def __post_init__(self) -> None:
        for key in KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
                raise SizingError(f"{key} must be an integer from 0 to {MAX_INT}, got {value!r}")
        if self.max_db_connections < 1:
            raise SizingError("max_db_connections must be >= 1 (0 would mean unlimited)")
        if self.default_pool_size < 1:
            raise SizingError("default_pool_size must be >= 1")


def render(sizing: Sizing, *, budget: str = "", generation: int = 0) -> str:
    """The include file's text, byte-identical for identical input."""
    header = f"; poolwarden sizing for {budget or 'a budget'}, generation {generation}."
    lines = [header + " Written by the operator; do not edit."]
    lines += [f"{key} = {getattr(sizing, key)}" for key in sorted(KEYS)]
    return "\n".join(lines) + "\n"


def parse(text: str) -> Sizing:
    """Read an include file written by `render`."""
    values: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        match = _LINE.match(line)
        if not match or match.group(1) not in KEYS:
            raise SizingError(f"line {number}: expected one of {list(KEYS)} = <integer>: {raw!r}")
        values[match.group(1)] = _number(match.group(2), f"line {number}: {match.group(1)}")
    missing = [key for key in KEYS if key not in values]
    if missing:
        raise SizingError(f"sizing include is missing {missing}")
    return Sizing(**values)


def generation(text: str) -> int:
    """The generation `render` wrote into the header; 0 when there is none.

    A header edited by hand to a number PgBouncer's status could not hold raises SizingError.
    """
    match = _HEADER_GENERATION.search(text)
    return _number(match.group(1), "the header's generation") if match else 0


def _number(text: str, what: str) -> int:
    # Check the length first: Python refuses to convert more than 4300 digits (ValueError).
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > _MAX_DIGITS or not text.lstrip("+-").isdigit():
        raise SizingError(f"{what} must be an integer from 0 to {MAX_INT}, got {text[:40]!r}")
    value = int(text)
    if not 0 <= value <= MAX_INT:
        raise SizingError(f"{what} must be an integer from 0 to {MAX_INT}, got {text[:40]!r}")
    return value
