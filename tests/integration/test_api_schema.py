"""The app's OpenAPI document against what the app really answers: a bounded schemathesis
run (every check, positive and negative data) against the app under gunicorn + uvicorn
workers, through PgBouncer to PostgreSQL.

A failure here is a 500 for input the API should reject (a value PostgreSQL cannot store
must be a 422), a status or header the document does not list, or a body that does not
match it. The run is bounded in examples per operation and, as a hard stop, in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx

ST = Path(sys.executable).with_name("st")  # schemathesis's CLI, from the same venv
# Per operation and phase: 25 takes 35-50 s here (2 cores). A deeper run, by hand:
# POOLWARDEN_API_SCHEMA_EXAMPLES=100 POOLWARDEN_API_SCHEMA_SEED=<n> (100 takes about 90 s).
MAX_EXAMPLES = int(os.environ.get("POOLWARDEN_API_SCHEMA_EXAMPLES", "25"))
# The same examples every run (no flakes); a failure reproduces with this seed.
SEED = int(os.environ.get("POOLWARDEN_API_SCHEMA_SEED", "20260601"))
HARD_STOP_SECONDS = 150  # if the run has not ended by then, it is a failure of its own


def junit_counts(report: Path) -> dict[str, int]:
    """tests / failures / errors summed over the run's JUnit report."""
    (path,) = report.glob("junit*.xml")
    suites = ElementTree.parse(path).getroot().iter("testsuite")
    totals = dict.fromkeys(("tests", "failures", "errors"), 0)
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    return totals


def run_schemathesis(url: str, workdir: Path, *extra: str) -> str:
    """`st run --checks all` over the app's document, bounded; asserts zero failures and
    returns the output."""
    report = workdir / "report"
    cmd = [str(ST), "run", f"{url}/openapi.json", "--checks", "all",
           "--max-examples", str(MAX_EXAMPLES), "--continue-on-failure", "--seed", str(SEED),
           "--generation-database", "none", "--workers", "2", "--request-timeout", "15",
           "--no-color", "--report", "junit", "--report-dir", str(report), *extra]  # fmt: skip
    started = time.monotonic()
    try:
        run = subprocess.run(
            cmd, capture_output=True, text=True, timeout=HARD_STOP_SECONDS, cwd=workdir
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(
            f"schemathesis still running after {HARD_STOP_SECONDS}s:\n{expired.stdout!r:.4000}"
        ) from None
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    print(f"schemathesis: {elapsed:.1f}s, exit {run.returncode}\n{output[-3000:]}")  # noqa: T201
    assert run.returncode == 0, f"schemathesis found failures ({elapsed:.0f}s):\n{output[-12000:]}"
    counts = junit_counts(report)
    assert counts["failures"] == counts["errors"] == 0, (counts, output[-3000:])
    assert counts["tests"] >= 8, counts  # every operation was tested (8 in the document)
    return output


def test_schemathesis_finds_no_failure_on_the_real_stack(start_app, tmp_path):
    app = start_app(workers=2)
    run_schemathesis(app.url, tmp_path)
    # The run really reached the database: items were created through PgBouncer.
    with httpx.Client(base_url=app.url, timeout=10) as client:
        listed = client.get("/items", params={"limit": 1})
    assert listed.status_code == 200 and json.loads(listed.text), listed.text


def test_schemathesis_with_the_database_down_sees_only_documented_503s(start_app, tmp_path):
    """Every operation that needs the database answers the documented 503 + Retry-After
    (status, body and header as the document says) when nothing listens where it is."""
    import devstack

    closed_port = devstack.free_port()
    app = start_app(workers=2, wait_ready=False, POOLWARDEN_DB_PORT=str(closed_port),
                    POOLWARDEN_CREATE_SCHEMA="false", POOLWARDEN_CONNECT_TIMEOUT="1")  # fmt: skip
    with httpx.Client(base_url=app.url, timeout=10) as client:
        deadline = time.monotonic() + 60
        while client.get("/healthz").status_code != 200:  # a worker still starting
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.get("/items").status_code == 503
    # A 503 is a server error to not_a_server_error and valid data that is refused to
    # positive_data_acceptance: both are the point here, every other check holds.
    run_schemathesis(
        app.url, tmp_path, "--exclude-checks", "not_a_server_error,positive_data_acceptance"
    )
    assert "database error" not in app.log_text()


def test_what_postgresql_cannot_store_is_a_422_not_a_500(start_app, stack):
    """The cases schemathesis found, by name: each used to reach PostgreSQL and come back as
    a 500 (a bigint out of range, a NUL in text, a lone surrogate echoed in the 422)."""
    app = start_app(workers=1)
    big, json_body = 2**63, {"Content-Type": "application/json"}
    with httpx.Client(base_url=app.url, timeout=10) as client:
        rejected = {
            "offset past bigint": client.get("/items", params={"offset": big}),
            "offset far past bigint": client.get("/items", params={"offset": 10**30}),
            "id past bigint": client.get(f"/items/{big}"),
            "id below bigint": client.get(f"/items/{-big - 1}"),
            "NUL in name": client.post("/items", json={"name": "a\x00b"}),
            "NUL in note": client.post("/items", json={"name": "a", "note": "\x00"}),
            "lone surrogate in name": client.post(
                "/items", content=b'{"name": "\\ud800"}', headers=json_body
            ),
        }
        answers = {case: (r.status_code, r.text[:200]) for case, r in rejected.items()}
        assert {case: status for case, (status, _) in answers.items()} == dict.fromkeys(
            rejected, 422
        ), answers
        nul = rejected["NUL in name"].json()["detail"][0]
        assert nul["loc"] == ["body", "name"] and "NUL" in nul["msg"], nul

        # The largest values that fit still work, and the documented statuses are the ones sent.
        assert client.get("/items", params={"offset": big - 1}).json() == []
        missing = client.get(f"/items/{big - 1}")
        assert missing.status_code == 404, missing.text
        undecodable = client.post("/items", content=b"\xff\xfe\x00", headers=json_body)
        assert undecodable.status_code == 400, undecodable.text
        allow = client.options("/items")
        assert allow.status_code == 405 and allow.headers["Allow"] == "GET, POST", allow.headers

    document = httpx.get(f"{app.url}/openapi.json").json()["paths"]
    assert {"400", "422", "503"} <= set(document["/items"]["post"]["responses"])
    assert {"404", "503"} <= set(document["/items/{item_id}"]["get"]["responses"])
    assert "Retry-After" in document["/items"]["get"]["responses"]["503"]["headers"]
    offset = {p["name"]: p for p in document["/items"]["get"]["parameters"]}["offset"]
    assert offset["schema"]["maximum"] == big - 1, offset
    # Nothing above reached PostgreSQL as an error (a 500 would have been logged).
    assert "database error" not in app.log_text(), app.log_text()[-3000:]
