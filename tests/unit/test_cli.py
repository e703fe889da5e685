"""`poolwarden plan`: the table people read, the JSON scripts read, and exit 2 on nonsense."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from poolwarden import cli

EXAMPLE = [
    "plan", "--max-connections", "100", "--reserved", "10", "--pgbouncer-replicas", "2",
    "--consumer", "web:replicas=4,workers=4,weight=3", "--consumer", "worker:replicas=2,workers=1",
]  # fmt: skip


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_output_has_the_documented_keys(capsys):
    code, out, _ = run(capsys, *EXAMPLE, "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert data["budget"] == 90
    assert data["overcommitted"] is False
    assert data["server_total"] == 90
    assert data["client_total"] == 4 * 4 * 17 + 2 * 1 * 22 == 316
    assert data["client_limit"] == 2000
    assert data["utilization"] == 1.0
    assert data["max_user_connections"] == 45
    assert data["pgbouncer"] == {
        "replicas": 2, "surge": 0, "default_pool_size": 41, "max_db_connections": 45,
        "reserve_pool_size": 4, "max_client_conn": 1000, "max_user_connections": 45,
    }  # fmt: skip
    web, worker = data["consumers"]
    keys = ("name", "replicas", "workers", "server_pool", "server_total", "pool_size",
            "max_overflow", "per_pod", "cap")  # fmt: skip
    assert [web[k] for k in keys] == ["web", 4, 4, 34, 68, 17, 0, 68, 64]
    assert [worker[k] for k in keys] == ["worker", 2, 1, 11, 22, 22, 0, 22, 64]


def test_table_output_shows_both_sides(capsys):
    code, out, _ = run(capsys, *EXAMPLE)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("budget 90 (max_connections 100 - reserved 10)")
    assert "max_db_connections 45, max_user_connections 45" in lines[1]
    header = next(line for line in lines if line.startswith("consumer "))
    assert header.split() == (
        "consumer replicas surge workers weight server_pool server_total threads cap pool_size "
        "max_overflow per_pod".split()
    )
    web = next(line for line in lines if line.startswith("web "))
    assert web.split() == ["web", "4", "0", "4", "3", "34", "68", "0", "64", "17", "0", "68"]
    worker = next(line for line in lines if line.startswith("worker "))
    assert worker.split() == ["worker", "2", "0", "1", "1", "11", "22", "0", "64", "22", "0", "22"]
    assert "client total 316 <= limit 2000 (max_client_conn 1000 x 2)" in lines
    assert "utilization 1.00" in lines
    assert lines[-1].startswith("Budget 90 = max_connections 100 - reserved 10.")


def test_threads_and_maxpool_cap_a_workers_pool(capsys):
    code, out, _ = run(
        capsys, "plan", "--max-connections", "100", "--reserved", "10",
        "--pgbouncer-replicas", "2", "--consumer", "web:replicas=6,workers=4,maxpool=10",
        "--consumer", "sync:replicas=2,workers=3,threads=8", "--output", "json",
    )  # fmt: skip
    assert code == 0
    web, sync = json.loads(out)["consumers"]
    assert (web["cap"], web["pool_size"], web["threads"]) == (10, 10, 0)
    assert (sync["cap"], sync["pool_size"], sync["threads"]) == (8, 8, 8)


def test_server_side_overcommit_says_so(capsys):
    code, out, _ = run(
        capsys, "plan", "--max-connections", "3", "--pgbouncer-replicas", "1",
        "--consumer", "a:replicas=1", "--consumer", "b:replicas=1", "--consumer", "c:replicas=1",
        "--consumer", "d:replicas=1",
    )  # fmt: skip
    assert code == 0
    assert "state OVERCOMMITTED" in out
    assert "Overcommitted on the server side" in out
    assert "Raise maxConnections to at least 4" in out


def test_overcommitted_table_says_so(capsys):
    code, out, _ = run(
        capsys, "plan", "--max-connections", "20", "--pgbouncer-replicas", "2",
        "--max-client-conn", "10", "--consumer", "web:replicas=10,workers=4",
    )  # fmt: skip
    assert code == 0
    assert "state OVERCOMMITTED" in out
    assert "Overcommitted on the client side" in out
    assert "Raise maxClientConn to at least 20" in out


def test_surge_and_overflow_are_accepted(capsys):
    code, out, _ = run(
        capsys, "plan", "--max-connections", "50", "--pgbouncer-surge", "25%",
        "--consumer", "web:replicas=4,workers=1,surge=25%,overflow=half", "--output", "json",
    )  # fmt: skip
    data = json.loads(out)
    assert data["pgbouncer"]["surge"] == 1
    assert data["consumers"][0]["surge"] == 1
    web = data["consumers"][0]
    assert web["max_overflow"] == (web["pool_size"] + web["max_overflow"]) // 2


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--max-connections", "-5", "--consumer", "a:replicas=1"], "--max-connections"),
        (["--max-connections", "ten", "--consumer", "a:replicas=1"], "--max-connections"),
        (
            ["--max-connections", "10", "--reserved", "10", "--consumer", "a:replicas=1"],
            "--reserved",
        ),
        (
            ["--max-connections", "10", "--reserved", "-1", "--consumer", "a:replicas=1"],
            "--reserved",
        ),
        (
            ["--max-connections", "10", "--pgbouncer-replicas", "-1", "--consumer", "a:replicas=1"],
            "--pgbouncer-replicas",
        ),
        (
            ["--max-connections", "10", "--pgbouncer-surge", "lots", "--consumer", "a:replicas=1"],
            "--pgbouncer-surge",
        ),
        (["--max-connections", "10", "--consumer", "a:replicas=-1"], "--consumer"),
        (["--max-connections", "10", "--consumer", "a:replicas=1,workers=0"], "--consumer"),
        (["--max-connections", "10", "--consumer", "a:replicas=1,color=red"], "--consumer"),
        (
            ["--max-connections", "10", "--consumer", "a:replicas=1", "--consumer", "a:replicas=2"],
            "--consumer",
        ),
        (["--max-connections", "10", "--consumer", "a:workers=2"], "--consumer"),
        (["--max-connections", "10", "--consumer", "a:replicas=x"], "--consumer"),
        (["--max-connections", "10", "--consumer", "a:replicas=1,overflow=lots"], "--consumer"),
        (["--max-connections", "10", "--consumer", "a:replicas=1", "--output", "xml"], "--output"),
        (["--max-connections", "10", "--consumer", "a:replicas=1,threads=-1"], "--consumer"),
        (["--max-connections", "10", "--consumer", "a:replicas=1,threads=x"], "--consumer"),
        (["--max-connections", "10", "--consumer", "a:replicas=1,maxpool=-2"], "--consumer"),
        (["--max-connections", "10", "--consumer", "Web:replicas=1"], "--consumer"),
        (
            ["--max-connections", "10", "--max-client-conn", "0", "--consumer", "a:replicas=1"],
            "--max-client-conn",
        ),
    ],
)
def test_nonsense_exits_2_naming_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as info:
        cli.main(["plan", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err, err


def test_console_script_runs_as_a_process():
    done = subprocess.run(
        [sys.executable, "-m", "poolwarden.cli", *EXAMPLE, "--output", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout)["consumers"][1]["name"] == "worker"


ROOT = pathlib.Path(__file__).resolve().parents[2]


def shown_examples():
    """Every `$ poolwarden plan ...` block of the README and docs/planner.md: (argv, output)."""
    for doc in ("README.md", "docs/planner.md"):
        for block in re.findall(
            r"```\n(\$ poolwarden plan .*?)```", (ROOT / doc).read_text(), re.S
        ):
            lines = block.splitlines()
            command = []
            while True:
                line = lines.pop(0)
                command.append(line.rstrip("\\").strip())
                if not line.endswith("\\"):
                    break
            yield pytest.param(shlex.split(" ".join(command))[3:], lines, id=doc)


@pytest.mark.parametrize(("argv", "shown"), list(shown_examples()))
def test_the_documented_examples_are_what_the_cli_prints(capsys, argv, shown):
    code, out, _ = run(capsys, "plan", *argv)
    assert code == 0
    assert shown, "an example without output"
    assert out.splitlines()[: len(shown)] == shown
