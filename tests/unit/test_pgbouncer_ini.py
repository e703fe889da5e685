"""The PgBouncer sizing include (poolwarden.pgbouncer_ini): round trip, stable bytes, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolwarden import pgbouncer_ini

sizings = st.builds(
    pgbouncer_ini.Sizing,
    default_pool_size=st.integers(1, 10_000),
    max_db_connections=st.integers(1, 10_000),
    reserve_pool_size=st.integers(0, 1_000),
    max_client_conn=st.integers(0, 100_000),
)


@given(sizings, st.integers(0, 10**9))
def test_round_trip_and_stable_bytes(sizing, generation):
    text = pgbouncer_ini.render(sizing, budget="ns/name", generation=generation)
    assert pgbouncer_ini.parse(text) == sizing
    assert text == pgbouncer_ini.render(sizing, budget="ns/name", generation=generation)
    assert text.endswith("\n")


def test_render_layout_is_sorted_with_a_comment_header():
    text = pgbouncer_ini.render(
        pgbouncer_ini.Sizing(8, 20, 0, 1000), budget="default/app", generation=3
    )
    lines = text.splitlines()
    assert lines[0].startswith("; poolwarden sizing for default/app, generation 3.")
    keys = [line.split(" = ")[0] for line in lines[1:]]
    assert keys == sorted(pgbouncer_ini.KEYS)


def test_parse_ignores_comments_and_blank_lines():
    text = (
        "# hash comment\n; semicolon comment\n\n default_pool_size = 2 \n"
        "max_client_conn=50\nmax_db_connections = 4\nreserve_pool_size = 1\n"
    )
    assert pgbouncer_ini.parse(text) == pgbouncer_ini.Sizing(2, 4, 1, 50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default_pool_size = 2\n", "missing"),
        ("pool_mode = session\n", "expected one of"),
        ("default_pool_size = two\n", "default_pool_size must be an integer"),
        (
            "default_pool_size = 0\nmax_client_conn = 1\nmax_db_connections = 1\n"
            "reserve_pool_size = 0\n",
            "default_pool_size must be >= 1",
        ),
        (
            "default_pool_size = 1\nmax_client_conn = 1\nmax_db_connections = 0\n"
            "reserve_pool_size = 0\n",
            "max_db_connections must be >= 1",
        ),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(pgbouncer_ini.SizingError) as raised:
        pgbouncer_ini.parse(text)
    assert message in str(raised.value)


def test_sizing_rejects_negative_and_bool():
    with pytest.raises(pgbouncer_ini.SizingError):
        pgbouncer_ini.Sizing(
            default_pool_size=1, max_db_connections=1, reserve_pool_size=-1, max_client_conn=1
        )
    with pytest.raises(pgbouncer_ini.SizingError):
        pgbouncer_ini.Sizing(
            default_pool_size=True, max_db_connections=1, reserve_pool_size=0, max_client_conn=1
        )


def test_generation_is_read_back_from_the_header():
    sizing = pgbouncer_ini.Sizing(
        default_pool_size=5, max_db_connections=10, reserve_pool_size=1, max_client_conn=100
    )
    assert pgbouncer_ini.generation(pgbouncer_ini.render(sizing, budget="ns/b", generation=7)) == 7
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
    text = (
        f"default_pool_size = {value}\nmax_client_conn = 1\nmax_db_connections = 1\n"
        "reserve_pool_size = 0\n"
    )
    with pytest.raises(pgbouncer_ini.SizingError) as raised:
        pgbouncer_ini.parse(text)
    assert "default_pool_size must be an integer from 0 to" in str(raised.value)
