"""The PgBouncer sizing include (poolwarden.pgbouncer_ini): round trip, stable bytes, aliases,
errors that name what is wrong."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sizing_strategies import databases, sizings

from poolwarden import pgbouncer_ini


def db(name: str, pool_size: int = 5, **kw: object) -> pgbouncer_ini.Database:
    fields = {"host": "pg.default.svc", "port": 5432, "dbname": "poolwarden"} | kw
    return pgbouncer_ini.Database(name=name, pool_size=pool_size, **fields)  # type: ignore[arg-type]


def sizing(*dbs: pgbouncer_ini.Database, **kw: int) -> pgbouncer_ini.Sizing:
    fields = {
        "default_pool_size": 18,
        "max_db_connections": 20,
        "reserve_pool_size": 2,
        "max_client_conn": 1000,
        "max_user_connections": 20,
    } | kw
    return pgbouncer_ini.Sizing(**fields, databases=dbs)


@given(sizings, st.integers(0, 10**9))
def test_round_trip_and_stable_bytes(value, generation):
    text = pgbouncer_ini.render(value, budget="ns/name", generation=generation)
    assert pgbouncer_ini.parse(text) == value
    assert text == pgbouncer_ini.render(value, budget="ns/name", generation=generation)
    assert pgbouncer_ini.render(pgbouncer_ini.parse(text), budget="ns/name",
                                generation=generation) == text
    assert pgbouncer_ini.generation(text) == generation
    assert text.endswith("\n")


@given(st.lists(databases, min_size=2, max_size=6, unique_by=lambda d: d.name), st.randoms())
def test_the_order_aliases_are_given_in_never_changes_the_bytes(dbs, rnd):
    shuffled = list(dbs)
    rnd.shuffle(shuffled)
    assert pgbouncer_ini.render(sizing(*dbs)) == pgbouncer_ini.render(sizing(*shuffled))
    assert sizing(*dbs) == sizing(*shuffled)


def test_render_is_exactly_the_documented_format():
    text = pgbouncer_ini.render(
        sizing(db("worker", 5), db("app", 15)), budget="default/app", generation=3
    )
    assert text == (
        "; poolwarden sizing for default/app, generation 3. Written by the operator; do not edit.\n"
        "default_pool_size = 18\n"
        "max_client_conn = 1000\n"
        "max_db_connections = 20\n"
        "max_user_connections = 20\n"
        "reserve_pool_size = 2\n"
        "\n"
        "[databases]\n"
        "app = host=pg.default.svc port=5432 dbname=poolwarden pool_size=15\n"
        "worker = host=pg.default.svc port=5432 dbname=poolwarden pool_size=5\n"
    )
    # The module's own documentation shows the same bytes (one format, written down once).
    assert text.replace("\n\n", "\n") in re.sub(
        r"\n\s*\n", "\n", "\n".join(line.strip() for line in pgbouncer_ini.__doc__.splitlines())
    )


def test_without_aliases_there_is_no_databases_part():
    text = pgbouncer_ini.render(sizing(), budget="default/app", generation=3)
    assert "[databases]" not in text
    keys = [line.split(" = ")[0] for line in text.splitlines()[1:]]
    assert keys == sorted(pgbouncer_ini.KEYS)
    assert pgbouncer_ini.parse(text).databases == ()


def test_parse_ignores_comments_blank_lines_and_spacing():
    text = (
        "# hash comment\n; semicolon comment\n\n default_pool_size = 2 \n"
        "max_client_conn=50\nmax_db_connections = 4\nmax_user_connections = 4\n"
        "reserve_pool_size = 1\n\n  [databases]  \n; the aliases\n"
        "app=pool_size=3   dbname=db host=10.0.0.1 port=6432\n"
    )
    assert pgbouncer_ini.parse(text) == pgbouncer_ini.Sizing(
        2, 4, 1, 50, 4, (db("app", 3, host="10.0.0.1", port=6432, dbname="db"),)
    )


LIMITS = (
    "default_pool_size = 1\nmax_client_conn = 1\nmax_db_connections = 1\n"
    "max_user_connections = 1\nreserve_pool_size = 0\n"
)
ALIAS = "host=pg port=5432 dbname=poolwarden pool_size=1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default_pool_size = 2\n", "missing"),
        (LIMITS.replace("max_user_connections = 1\n", ""), "missing ['max_user_connections']"),
        ("pool_mode = session\n", "line 1: expected one of"),
        ("default_pool_size = two\n", "default_pool_size must be an integer"),
        (LIMITS.replace("default_pool_size = 1", "default_pool_size = 0"),
         "default_pool_size must be >= 1"),
        (LIMITS.replace("max_db_connections = 1", "max_db_connections = 0"),
         "max_db_connections must be >= 1"),
        (LIMITS.replace("max_user_connections = 1", "max_user_connections = 0"),
         "max_user_connections must be >= 1 (0 would mean unlimited)"),
        (LIMITS + "max_client_conn = 2\n", "line 6: max_client_conn given twice"),
        (LIMITS + "[users]\n", "line 6: only one [databases] section"),
        (LIMITS + "[databases]\n[databases]\n", "line 7: only one [databases] section"),
        (LIMITS + "[databases]\nmax_client_conn = 5\n", "line 7: database 'max_client_conn'"),
        (LIMITS + f"[databases]\napp = {ALIAS}\napp = {ALIAS}\n", "line 8: database alias 'app'"),
        (LIMITS + f"[databases]\nApp = {ALIAS}\n", "line 7: database 'App': name must be a"),
        (LIMITS + f"[databases]\npgbouncer = {ALIAS}\n", "PgBouncer's admin console"),
        (LIMITS + "[databases]\napp = host=pg port=5432 dbname=poolwarden\n",
         "line 7: database 'app' is missing ['pool_size']"),
        (LIMITS + f"[databases]\napp = {ALIAS} user=me\n", "unexpected 'user=me'"),
        (LIMITS + f"[databases]\napp = {ALIAS} port=1\n", "database 'app': port given twice"),
        (LIMITS + "[databases]\napp = host=pg port=0 dbname=poolwarden pool_size=1\n",
         "line 7: database 'app': port must be an integer from 1 to 65535, got 0"),
        (LIMITS + "[databases]\napp = host=pg port=5432 dbname=poolwarden pool_size=0\n",
         "database 'app': pool_size must be an integer from 1"),
        (LIMITS + "[databases]\napp = host=pg;x port=5432 dbname=poolwarden pool_size=1\n",
         "database 'app': host must be a host name"),
        (LIMITS + "[databases]\napp = host=pg port=5432 dbname=pool'warden pool_size=1\n",
         "database 'app': dbname must be a database name"),
    ],
)
def test_parse_errors_name_the_line_and_what_is_wrong(text, message):
    with pytest.raises(pgbouncer_ini.SizingError) as raised:
        pgbouncer_ini.parse(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "-app"}, "name must be a consumer name"),
        ({"name": "a" * 64}, "name must be a consumer name"),
        ({"name": "app\n"}, "name must be a consumer name"),
        ({"host": "pg host"}, "host must be"),
        ({"port": 65536}, "port must be an integer from 1 to 65535"),
        ({"port": True}, "port must be an integer"),
        ({"dbname": ""}, "dbname must be"),
        ({"pool_size": 0}, "pool_size must be an integer from 1"),
        ({"pool_size": "3"}, "pool_size must be an integer"),
    ],
)
def test_database_rejects_what_pgbouncer_would_misread(fields, message):
    values = {"name": "app", "host": "pg", "port": 5432, "dbname": "poolwarden", "pool_size": 1}
    with pytest.raises(pgbouncer_ini.SizingError) as raised:
        pgbouncer_ini.Database(**(values | fields))
    assert message in str(raised.value)


def test_sizing_rejects_negative_bool_duplicates_and_non_databases():
    with pytest.raises(pgbouncer_ini.SizingError, match="reserve_pool_size"):
        sizing(reserve_pool_size=-1)
    with pytest.raises(pgbouncer_ini.SizingError, match="default_pool_size"):
        sizing(default_pool_size=True)
    with pytest.raises(pgbouncer_ini.SizingError, match=r"alias\(es\) \['app'\] given more"):
        sizing(db("app"), db("worker"), db("app", 7))
    with pytest.raises(pgbouncer_ini.SizingError, match="Database entries"):
        pgbouncer_ini.Sizing(1, 1, 0, 1, 1, databases=("app",))  # type: ignore[arg-type]


def test_generation_is_read_back_from_the_header():
    text = pgbouncer_ini.render(sizing(db("app")), budget="ns/b", generation=7)
    assert pgbouncer_ini.generation(text) == 7
    assert pgbouncer_ini.generation("default_pool_size = 5\n") == 0  # no header: unknown


@pytest.mark.parametrize(
    "header",
    [
        "; poolwarden sizing for ns/b, generation " + "9" * 5000 + ". Written by the operator",
        f"; poolwarden sizing for ns/b, generation {2**63}. Written by the operator",
    ],
)
def test_a_huge_generation_in_a_hand_edited_header_is_a_sizing_error(header):
    with pytest.raises(pgbouncer_ini.SizingError) as raised:
        pgbouncer_ini.generation(header + "\n")
    assert "generation must be an integer from 0 to 9223372036854775807" in str(raised.value)
    assert pgbouncer_ini.generation(f"; poolwarden sizing for ns/b, generation {2**63 - 1}.") == (
        2**63 - 1
    )


@pytest.mark.parametrize("value", ["9" * 5000, str(2**63)])
def test_a_huge_value_is_a_sizing_error(value):
    with pytest.raises(pgbouncer_ini.SizingError) as raised:
        pgbouncer_ini.parse(LIMITS.replace("default_pool_size = 1", f"default_pool_size = {value}"))
    assert "default_pool_size must be an integer from 0 to" in str(raised.value)
    with pytest.raises(pgbouncer_ini.SizingError) as raised:
        pgbouncer_ini.parse(
            LIMITS + f"[databases]\napp = host=pg port=5432 dbname=db pool_size={value}\n"
        )
    assert "line 7: database 'app': pool_size must be an integer from 0 to" in str(raised.value)
