"""poolwarden_fastapi_app.models: the API shapes accept only what the columns can store (no
server needed)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from poolwarden_fastapi_app import models


@pytest.mark.parametrize("field", ["name", "note"])
def test_nul_is_refused_with_the_reason(field):
    body = {"name": "ok", field: "a\x00b"}
    with pytest.raises(ValidationError) as error:
        models.ItemCreate(**body)
    (problem,) = error.value.errors()
    assert problem["loc"] == (field,)
    assert "NUL character (U+0000) at 1" in problem["msg"] and "remove it" in problem["msg"]


def test_lone_surrogate_is_refused():
    with pytest.raises(ValueError, match="lone surrogate at 2"):
        models.storable_text("ab\ud800")


def test_storable_text_passes_any_other_unicode():
    text = "héllo \u200b 日本 \U0001f600 \t\n\x01"
    assert models.storable_text(text) == text
    assert models.ItemCreate(name=text, note=text).name == text


def test_the_document_says_what_the_validator_enforces():
    schema = models.ItemCreate.model_json_schema()["properties"]
    for field in ("name", "note"):
        pattern = re.compile(schema[field]["pattern"])
        assert pattern.match("any text") and not pattern.match("a\x00b")
    assert schema["name"]["maxLength"] == models.Item.__table__.c.name.type.length


def test_bigint_bounds_are_postgresqls():
    assert (models.BIGINT_MIN, models.BIGINT_MAX) == (-(2**63), 2**63 - 1)
