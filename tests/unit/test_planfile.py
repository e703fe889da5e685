"""The plan file format (poolwarden.planfile): round trip, stable bytes, clear errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolwarden import planfile

plans = st.builds(
    planfile.PoolPlan,
    pool_size=st.integers(1, 10_000),
    max_overflow=st.integers(0, 10_000),
    generation=st.integers(0, 2**53),
    budget=st.text(max_size=50),
    consumer=st.text(max_size=50),
    overcommitted=st.booleans(),
    explanation=st.text(max_size=300),
)


@given(plans)
def test_round_trip(plan):
    assert planfile.parse(planfile.render(plan)) == plan


@given(plans)
def test_render_is_deterministic_sorted_and_ends_with_newline(plan):
    text = planfile.render(plan)
    assert text == planfile.render(plan)
    assert text.endswith("}\n")
    keys = list(json.loads(text))
    assert keys == sorted(keys)


def test_parse_accepts_bytes_and_minimal_plan():
    plan = planfile.parse(
        b'{"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPlan", '
        b'"poolSize": 3, "maxOverflow": 0}'
    )
    assert (plan.pool_size, plan.max_overflow, plan.generation) == (3, 0, 0)


def doc(**fields) -> str:
    base = {
        "apiVersion": planfile.API_VERSION,
        "kind": planfile.KIND,
        "poolSize": 2,
        "maxOverflow": 1,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{ nope", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (doc(kind="Other"), "must have apiVersion"),
        (doc(apiVersion="v1"), "must have apiVersion"),
        (doc(poolSize=None), "missing 'poolSize'"),
        (doc(maxOverflow=None), "missing 'maxOverflow'"),
        (doc(poolSize=0), "'poolSize' must be >= 1"),
        (doc(maxOverflow=-1), "'maxOverflow' must be >= 0"),
        (doc(poolSize=True), "'poolSize' must be an integer"),
        (doc(poolSize="4"), "'poolSize' must be an integer"),
        (doc(poolSize=2.5), "'poolSize' must be an integer"),
        (doc(generation=-1), "'generation' must be >= 0"),
        (doc(overcommitted="yes"), "'overcommitted' must be true or false"),
        (doc(budget=3), "'budget' must be a string"),
        (doc(poolsize=3), "unknown field(s) ['poolsize']"),
    ],
)
def test_parse_errors_name_what_to_fix(text, message):
    with pytest.raises(planfile.PlanFileError) as raised:
        planfile.parse(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"poolSize": ' + "9" * 5000 + "}", "too large to read"),
        (doc(generation=2**63), "'generation' must be at most 9223372036854775807"),
        (doc(poolSize=2**64), "'poolSize' must be at most"),
        ("[" * 100_000 + "]" * 100_000, "plan file"),
    ],
)
def test_huge_numbers_in_a_hand_edited_plan_are_a_plan_file_error(text, message):
    with pytest.raises(planfile.PlanFileError) as raised:
        planfile.parse(text)
    assert message in str(raised.value)


def test_the_largest_generation_still_reads():
    assert planfile.parse(doc(generation=2**63 - 1)).generation == 2**63 - 1
