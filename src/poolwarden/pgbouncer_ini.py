"""The PgBouncer sizing include: the operator's half of PgBouncer's configuration.

PgBouncer's main ``pgbouncer.ini`` (static, rendered by the PgBouncer image's entrypoint) ends
its ``[pgbouncer]`` section with ``%include /etc/pgbouncer/sizing/sizing.ini``, as its LAST
line. The operator owns that include file (ConfigMap key ``sizing.ini``); the PgBouncer container
watches it and issues ``RELOAD`` when its bytes change. Format: the global limits, keys sorted,
values integers; then, when there are consumers, a ``[databases]`` part with one alias per
consumer, sorted by name, each with its own server-side ``pool_size``::

    ; poolwarden sizing for default/app, generation 3. Written by the operator; do not edit.
    default_pool_size = 18
    max_client_conn = 1000
    max_db_connections = 20
    max_user_connections = 20
    reserve_pool_size = 2

    [databases]
    app = host=pg.default.svc port=5432 dbname=poolwarden pool_size=15
    worker = host=pg.default.svc port=5432 dbname=poolwarden pool_size=5

``max_db_connections`` caps each database (alias) on its own; ``max_user_connections`` caps the
sum over every alias of the one app user, so it is what keeps a PgBouncer pod inside its slice of
the budget. The ``[databases]`` header switches section (the include is the last line of the
main ini); RELOAD adds, resizes and removes aliases live.

Rendering is deterministic (sorted keys and aliases, no timestamps, trailing newline) so that an
unchanged plan never changes the file and never triggers a reload.
"""

from __future__ import annotations

import dataclasses
import re

FILE_NAME = "sizing.ini"
KEYS = (
    "default_pool_size",
    "max_client_conn",
    "max_db_connections",
    "max_user_connections",
    "reserve_pool_size",
)
"""The global keys, in the order `render` writes them (sorted)."""
DATABASE_KEYS = ("host", "port", "dbname", "pool_size")
"""The settings of one alias line, in the order `render` writes them."""
DATABASES_HEADER = "[databases]"
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""A database alias: a consumer name (the CRD checks consumer names against the same pattern)."""
HOST_PATTERN = r"^[A-Za-z0-9.-]+$"
DBNAME_PATTERN = r"^[A-Za-z0-9_]+$"
RESERVED_ALIASES = ("pgbouncer",)
"""Names PgBouncer keeps for itself (its admin console)."""
MAX_INT = 2**63 - 1
"""The largest number a sizing include may hold (PgBouncer and the budget's status: int64)."""
_MAX_DIGITS = len(str(MAX_INT))
_LINE = re.compile(r"^\s*([a-z_]+)\s*=\s*(\S+)\s*$")
_ALIAS_LINE = re.compile(r"^\s*([^=\s]+)\s*=\s*(.*?)\s*$")
_SECTION = re.compile(r"^\s*\[([^\]]*)\]\s*$")
_HEADER_GENERATION = re.compile(r"^; poolwarden sizing for .*, generation (\d+)\.", re.M)


class SizingError(ValueError):
    """A sizing include that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Database:
    """One consumer's alias in PgBouncer's ``[databases]``: where it connects and its pool."""

    name: str
    host: str
    port: int
    dbname: str
    pool_size: int

    def __post_init__(self) -> None:
        what = f"database {self.name!r}"
        _check_text(f"{what}: name", self.name, ALIAS_PATTERN, "a consumer name")
        if self.name in RESERVED_ALIASES:
            raise SizingError(f"{what}: name {self.name!r} is PgBouncer's admin console")
        _check_text(f"{what}: host", self.host, HOST_PATTERN, "a host name or IP address")
        _check_int(f"{what}: port", self.port, 1, 65535)
        _check_text(f"{what}: dbname", self.dbname, DBNAME_PATTERN, "a database name")
        _check_int(f"{what}: pool_size", self.pool_size, 1, MAX_INT)

    def line(self) -> str:
        """The alias line as `render` writes it."""
        settings = " ".join(f"{key}={getattr(self, key)}" for key in DATABASE_KEYS)
        return f"{self.name} = {settings}"


@dataclasses.dataclass(frozen=True)
class Sizing:
    """Per-PgBouncer-replica limits and the consumers' aliases (kept sorted by name)."""

    default_pool_size: int
    max_db_connections: int
    reserve_pool_size: int
    max_client_conn: int
    max_user_connections: int
    databases: tuple[Database, ...] = ()

    def __post_init__(self) -> None:
        for key in KEYS:
            _check_int(key, getattr(self, key), 0, MAX_INT)
        for key in ("max_db_connections", "max_user_connections"):
            if getattr(self, key) < 1:
                raise SizingError(f"{key} must be >= 1 (0 would mean unlimited)")
        if self.default_pool_size < 1:
            raise SizingError("default_pool_size must be >= 1")
        databases = tuple(self.databases)
        for item in databases:
            if not isinstance(item, Database):
                raise SizingError(f"databases must hold Database entries, got {item!r}")
        names = [item.name for item in databases]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SizingError(f"database alias(es) {duplicates} given more than once")
        object.__setattr__(self, "databases", tuple(sorted(databases, key=lambda d: d.name)))


def render(sizing: Sizing, *, budget: str = "", generation: int = 0) -> str:
    """The include file's text, byte-identical for identical input."""
    header = f"; poolwarden sizing for {budget or 'a budget'}, generation {generation}."
    lines = [header + " Written by the operator; do not edit."]
    lines += [f"{key} = {getattr(sizing, key)}" for key in KEYS]
    if sizing.databases:
        lines += ["", DATABASES_HEADER]
        lines += [database.line() for database in sizing.databases]
    return "\n".join(lines) + "\n"


def parse(text: str) -> Sizing:
    """Read an include file written by `render`; SizingError names the line that is wrong."""
    values: dict[str, int] = {}
    databases: dict[str, Database] = {}
    in_databases = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        where = f"line {number}"
        section = _SECTION.match(line)
        if section:
            if line != DATABASES_HEADER or in_databases:
                raise SizingError(
                    f"{where}: only one {DATABASES_HEADER} section may follow the limits: {raw!r}"
                )
            in_databases = True
        elif in_databases:
            database = _parse_alias(line, where)
            if database.name in databases:
                raise SizingError(f"{where}: database alias {database.name!r} given twice")
            databases[database.name] = database
        else:
            match = _LINE.match(line)
            if not match or match.group(1) not in KEYS:
                raise SizingError(
                    f"{where}: expected one of {list(KEYS)} = <integer> or {DATABASES_HEADER}: "
                    f"{raw!r}"
                )
            key = match.group(1)
            if key in values:
                raise SizingError(f"{where}: {key} given twice")
            values[key] = _number(match.group(2), f"{where}: {key}")
    missing = [key for key in KEYS if key not in values]
    if missing:
        raise SizingError(f"sizing include is missing {missing}")
    return Sizing(**values, databases=tuple(databases.values()))


def generation(text: str) -> int:
    """The generation `render` wrote into the header; 0 when there is none.

    A header edited by hand to a number PgBouncer's status could not hold raises SizingError.
    """
    match = _HEADER_GENERATION.search(text)
    return _number(match.group(1), "the header's generation") if match else 0


def _parse_alias(line: str, where: str) -> Database:
    expected = f"NAME = {' '.join(f'{key}=...' for key in DATABASE_KEYS)}"
    match = _ALIAS_LINE.match(line)
    if not match:
        raise SizingError(f"{where}: expected {expected}: {line!r}")
    name = match.group(1)
    settings: dict[str, str] = {}
    for item in match.group(2).split():
        key, eq, value = item.partition("=")
        if not eq or key not in DATABASE_KEYS:
            raise SizingError(
                f"{where}: database {name!r}: unexpected {item!r} (allowed: "
                f"{', '.join(DATABASE_KEYS)})"
            )
        if key in settings:
            raise SizingError(f"{where}: database {name!r}: {key} given twice")
        settings[key] = value
    missing = [key for key in DATABASE_KEYS if key not in settings]
    if missing:
        raise SizingError(f"{where}: database {name!r} is missing {missing}")
    try:
        return Database(
            name=name,
            host=settings["host"],
            port=_number(settings["port"], f"database {name!r}: port"),
            dbname=settings["dbname"],
            pool_size=_number(settings["pool_size"], f"database {name!r}: pool_size"),
        )
    except SizingError as exc:
        raise SizingError(f"{where}: {exc}") from None


def _check_int(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SizingError(f"{what} must be an integer from {low} to {high}, got {value!r}")


def _check_text(what: str, value: object, pattern: str, meaning: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        shown = value[:70] if isinstance(value, str) else value
        raise SizingError(f"{what} must be {meaning} matching {pattern}, got {shown!r}")


def _number(text: str, what: str) -> int:
    # Check the length first: Python refuses to convert more than 4300 digits (ValueError).
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > _MAX_DIGITS or not text.lstrip("+-").isdigit():
        raise SizingError(f"{what} must be an integer from 0 to {MAX_INT}, got {text[:40]!r}")
    value = int(text)
    if not 0 <= value <= MAX_INT:
        raise SizingError(f"{what} must be an integer from 0 to {MAX_INT}, got {text[:40]!r}")
    return value
