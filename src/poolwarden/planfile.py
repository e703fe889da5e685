"""The plan file: the one contract between the operator and the pods.

The operator writes one plan per consumer into a ConfigMap (key ``plan.json``); the app mounts
that ConfigMap as a volume, watches the file, and resizes its SQLAlchemy pool in place.

Format (JSON, UTF-8, keys sorted, two-space indent, trailing newline)::

    {
      "apiVersion": "poolwarden.io/v1alpha1",
      "budget": "default/app",          # <namespace>/<ConnectionBudget name>
      "consumer": "app",                # the consumer's name in the budget
      "explanation": "...",             # one paragraph a person can read
      "generation": 3,                  # grows with every new plan; 0 = defaults, no operator
      "kind": "PoolPlan",
      "maxOverflow": 1,                 # SQLAlchemy max_overflow per worker
      "overcommitted": false,           # true: the budget cannot give every worker its share
      "poolSize": 4                     # SQLAlchemy pool_size per worker (>= 1)
    }

Timeouts, recycle and pre-ping are not part of the plan: they come from the app's settings.
Rendering is deterministic so that an unchanged plan is byte-identical and never rewritten.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

API_VERSION = "poolwarden.io/v1alpha1"
KIND = "PoolPlan"
FILE_NAME = "plan.json"
MAX_INT = 2**63 - 1
"""The largest number a plan file may hold (an int64, what the budget's status can store)."""


class PlanFileError(ValueError):
    """A plan file that cannot be used; the message says what is wrong and what to change."""


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """The pool one worker of one consumer should have."""

    pool_size: int
    max_overflow: int
    generation: int = 0
    budget: str = ""
    consumer: str = ""
    overcommitted: bool = False
    explanation: str = ""

    def __post_init__(self) -> None:
        _check_int("poolSize", self.pool_size, minimum=1)
        _check_int("maxOverflow", self.max_overflow, minimum=0)
        _check_int("generation", self.generation, minimum=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "budget": self.budget,
            "consumer": self.consumer,
            "explanation": self.explanation,
            "generation": self.generation,
            "maxOverflow": self.max_overflow,
            "overcommitted": self.overcommitted,
            "poolSize": self.pool_size,
        }


def render(plan: PoolPlan) -> str:
    """The plan as file text: sorted keys, stable bytes, no timestamps."""
    return json.dumps(plan.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def parse(text: str | bytes) -> PoolPlan:
    """Read a plan file; raise PlanFileError naming the field to fix."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"plan file is not valid JSON: {exc}") from exc
    except ValueError as exc:  # a number with more digits than Python converts (4300)
        raise PlanFileError(
            f"plan file holds a number too large to read ({exc}); every number must be at most "
            f"{MAX_INT}"
        ) from exc
    except RecursionError as exc:
        raise PlanFileError("plan file nests too deeply to be a plan") from exc
    if not isinstance(data, dict):
        raise PlanFileError("plan file must hold a JSON object")
    if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        raise PlanFileError(
            f"plan file must have apiVersion {API_VERSION!r} and kind {KIND!r}, "
            f"got {data.get('apiVersion')!r} / {data.get('kind')!r}"
        )
    known = {
        "apiVersion",
        "kind",
        "budget",
        "consumer",
        "explanation",
        "generation",
        "maxOverflow",
        "overcommitted",
        "poolSize",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise PlanFileError(f"plan file has unknown field(s) {unknown}; known: {sorted(known)}")
    for field in ("poolSize", "maxOverflow"):
        if field not in data:
            raise PlanFileError(f"plan file is missing {field!r}")
    for field in ("budget", "consumer", "explanation"):
        if not isinstance(data.get(field, ""), str):
            raise PlanFileError(f"plan file field {field!r} must be a string")
    if not isinstance(data.get("overcommitted", False), bool):
        raise PlanFileError("plan file field 'overcommitted' must be true or false")
    return PoolPlan(
        pool_size=data["poolSize"],
        max_overflow=data["maxOverflow"],
        generation=data.get("generation", 0),
        budget=data.get("budget", ""),
        consumer=data.get("consumer", ""),
        overcommitted=data.get("overcommitted", False),
        explanation=data.get("explanation", ""),
    )


def _check_int(field: str, value: object, *, minimum: int) -> None:
    # bool is an int subclass; `true` is never a valid size.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanFileError(f"plan file field {field!r} must be an integer, got {value!r}")
    if value < minimum:
        raise PlanFileError(f"plan file field {field!r} must be >= {minimum}, got {value}")
    if value > MAX_INT:
        raise PlanFileError(f"plan file field {field!r} must be at most {MAX_INT}, got {value}")
