"""The PgBouncer entrypoint on the real PgBouncer 1.24: the chart's fallback sizing file (used
until the operator's first sizing.ini, applied in place by RELOAD), the input guard that stops
startup on a value that would rewrite pgbouncer.ini, and idle_transaction_timeout freeing a
server connection pinned by a transaction left open."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import devstack
import pytest
import yaml
from test_pgbouncer import show_config, sizing, wait_until

from poolwarden import pgbouncer_ini

REPO = Path(__file__).resolve().parents[2]
HELM = Path(os.environ.get("HELM", REPO / ".tools" / "bin" / "helm"))


def fallback(pool: int, max_db: int, *, clients: int = 1000) -> str:
    """A fallback file in the layout the chart renders (pgbouncer-fallback-configmap.yaml)."""
    return (
        "; Fallback sizing rendered by the chart: used until the operator's sizing.ini exists.\n"
        f"default_pool_size = {pool}\nmax_client_conn = {clients}\n"
        f"max_db_connections = {max_db}\nmax_user_connections = {max_db}\n"
        "reserve_pool_size = 0\n"
    )


class FallbackDir:
    """Stands in for the mounted fallback ConfigMap (/etc/pgbouncer/fallback) of one PgBouncer."""

    def __init__(self, stack: devstack.Stack):
        self.name = f"fallback-{uuid.uuid4().hex[:8]}"
        self.path: Path = stack.state / self.name
        self.path.mkdir(mode=0o755)
        self.env = {"PGBOUNCER_FALLBACK_DIR": f"/mnt/state/{self.name}"}

    def write(self, text: str) -> None:  # atomically, as the kubelet swaps a ConfigMap's files
        tmp = self.path / ".sizing.ini.tmp"
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.path / "sizing.ini")


def pgbouncer_pids(bouncer: devstack.Bouncer) -> list[int]:
    """PIDs of the pgbouncer processes running this bouncer's rendered config."""
    conf = f"/mnt/state/{bouncer.name}/conf/pgbouncer.ini".encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pgbouncer") and conf in argv:
            pids.append(int(cmdline.parent.name))
    return pids


def limits(bouncer: devstack.Bouncer) -> tuple[str, str]:
    config = show_config(bouncer)
    return config["default_pool_size"], config["max_db_connections"]


def test_fallback_file_at_start_then_reloaded_in_place_then_the_operator_file_wins(
    start_bouncer, stack
):
    fb = FallbackDir(stack)
    fb.write(fallback(6, 9))
    bouncer = start_bouncer(**fb.env)
    assert limits(bouncer) == ("6", "9")
    assert "sizing (fallback file)" in bouncer.log_text()
    [pid] = pgbouncer_pids(bouncer)

    # helm upgrade changed the budget: the ConfigMap's new bytes reach the running pod.
    fb.write(fallback(4, 4))
    wait_until(lambda: limits(bouncer) == ("4", "4"), "the changed fallback file")
    assert pgbouncer_pids(bouncer) == [pid]  # RELOADed in place, never restarted
    # SHOW CONFIG has the new limits as soon as PgBouncer reloads; the entrypoint logs each
    # step after its admin command returns, so its lines may follow a moment later.
    wait_until(lambda: "RECONNECT done" in bouncer.log_text(), "the RECONNECT after lowering")
    log = bouncer.log_text()
    assert "sizing changed (fallback file)" in log and "RELOAD done" in log
    assert "RECONNECT done" in log  # a lowered limit is enforced as for the operator's file

    bouncer.write_sizing(sizing(12, 15, generation=1))  # the operator's first plan
    wait_until(lambda: limits(bouncer) == ("12", "15"), "the operator's file")
    fb.write(fallback(2, 2))  # from now on the fallback no longer matters
    time.sleep(2.5)  # a few watch rounds
    assert limits(bouncer) == ("12", "15")
    assert pgbouncer_pids(bouncer) == [pid]


@pytest.mark.skipif(not HELM.exists(), reason=f"helm not found at {HELM}: run `make tools`")
def test_the_charts_rendered_fallback_configmap_is_what_pgbouncer_runs_with(start_bouncer, stack):
    out = subprocess.run(
        [
            str(HELM),
            "template",
            "pw",
            str(REPO / "charts" / "poolwarden"),
            "-s",
            "templates/pgbouncer-fallback-configmap.yaml",
            "--set",
            "pgbouncer.replicaCount=3,postgresql.maxConnections=50,budget.reserved=5",
            "--set",
            "budget.maxClientConn=250",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    text = yaml.safe_load(out)["data"]["sizing.ini"]
    chart = pgbouncer_ini.parse(text)  # the operator's own format: one parser for both files
    fb = FallbackDir(stack)
    fb.write(text)
    bouncer = start_bouncer(**fb.env)
    assert "sizing (fallback file)" in bouncer.log_text(), bouncer.log_text()
    config = show_config(bouncer)
    assert {key: int(config[key]) for key in pgbouncer_ini.KEYS} == {
        key: getattr(chart, key) for key in pgbouncer_ini.KEYS}
    assert chart.max_client_conn == 250
    assert 1 <= chart.max_user_connections <= (50 - 5) // 3  # a slice of the budget per pod
    # The app's alias (if the chart renders one) is served with its pool_size.
    served = {row[0]: row for row in bouncer.admin("SHOW DATABASES")}
    for db in chart.databases:
        assert db.name in served, served


def test_operator_file_present_at_start_wins_over_the_fallback(start_bouncer, stack):
    fb = FallbackDir(stack)
    fb.write(fallback(3, 3))
    port = devstack.free_port()
    name = f"pgbouncer-{port}"
    devstack.Bouncer(stack=stack, name=name, port=port).write_sizing(sizing(8, 11, generation=4))
    try:
        bouncer = stack.start_pgbouncer(name=name, port=port, **fb.env)
        assert limits(bouncer) == ("8", "11")
        assert "sizing (operator file)" in bouncer.log_text()
    finally:
        stack.stop_one(name)


@pytest.mark.parametrize(
    "content",
    ["", "default_pool_size = lots\n", fallback(0, 0)],
    ids=["missing", "garbage", "zero"],
)
def test_missing_or_unusable_fallback_uses_the_built_in_default_with_one_log_line(
    content, start_bouncer, stack
):
    fb = FallbackDir(stack)
    if content:
        fb.write(content)
    # The devstack sets the built-in default's environment override (20/40); drop it here.
    bouncer = start_bouncer(
        **fb.env, PGBOUNCER_DEFAULT_POOL_SIZE="1", PGBOUNCER_MAX_DB_CONNECTIONS="1"
    )
    assert limits(bouncer) == ("1", "1")
    time.sleep(2.5)  # a few watch rounds: still one line
    assert bouncer.log_text().count("using the built-in default") == 1, bouncer.log_text()
    fb.write(fallback(5, 5))  # a usable fallback appears: it is applied in place
    wait_until(lambda: limits(bouncer) == ("5", "5"), "the now usable fallback")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PGBOUNCER_DB_HOST": "127.0.0.1\nmax_db_connections = 0"},
            "PGBOUNCER_DB_HOST must not contain a newline",
        ),
        (
            {"PGBOUNCER_DB_PASSWORD": 'pw\n"pgbouncer_admin" "mine"'},
            "PGBOUNCER_DB_PASSWORD must not contain a newline",
        ),
        (
            {"PGBOUNCER_DB_HOST": "127.0.0.1 max_db_connections=0 pool_size=500"},
            "PGBOUNCER_DB_HOST must be a host name or IP address",
        ),
        (
            {"PGBOUNCER_IDLE_TRANSACTION_TIMEOUT": "60 ; x"},
            "PGBOUNCER_IDLE_TRANSACTION_TIMEOUT must be a whole number",
        ),
    ],
    ids=["newline-host", "newline-password", "host-with-parameters", "timeout-not-a-number"],
)
def test_a_value_that_would_rewrite_the_config_stops_startup(env, message, stack):
    port = devstack.free_port()
    name = f"pgbouncer-{port}"
    try:
        with pytest.raises(RuntimeError, match=r"process exited with status [1-9]") as failed:
            stack.start_pgbouncer(name=name, port=port, **env)
        assert message in str(failed.value), failed.value
    finally:
        stack.stop_one(name)
    assert not devstack.port_open(port)  # PgBouncer never listened
    assert "starting" not in stack.log_file(name).read_text()


def test_idle_transaction_timeout_frees_the_server_connection_a_stuck_transaction_holds(
    start_bouncer, stack
):
    # One server connection in all: a transaction left open would block every other client.
    bouncer = start_bouncer(
        PGBOUNCER_DEFAULT_POOL_SIZE="1",
        PGBOUNCER_MAX_DB_CONNECTIONS="1",
        PGBOUNCER_IDLE_TRANSACTION_TIMEOUT="2",
        PGBOUNCER_QUERY_WAIT_TIMEOUT="20",
    )
    assert show_config(bouncer)["idle_transaction_timeout"] == "2"
    marker = f"stuck-{bouncer.port}"

    def stuck_backends() -> int:
        return int(
            stack.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                f"AND query LIKE '%{marker}%' AND query NOT LIKE '%pg_stat_activity%'"
            ).strip()
        )

    async def scenario() -> tuple[float, int, int, BaseException | None]:
        kwargs = dict(
            host="127.0.0.1",
            port=bouncer.port,
            user=devstack.APP_USER,
            password=stack.app_password,
            database=devstack.APP_DB,
            statement_cache_size=0,
        )
        stuck = await asyncpg.connect(**kwargs)
        other = await asyncpg.connect(**kwargs)
        await stuck.execute("BEGIN")
        await stuck.fetchval(f"SELECT '{marker}'")  # then goes idle, inside the transaction
        held = await asyncio.to_thread(stuck_backends)
        started = time.monotonic()
        value = await other.fetchval("SELECT 40 + 2")  # waits for the only server connection
        waited = time.monotonic() - started
        error: BaseException | None = None
        try:
            await stuck.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            error = exc
        await other.close()
        stuck.terminate()
        return waited, value, held, error

    waited, value, held, error = asyncio.run(scenario())
    assert held == 1  # the stuck transaction held the server connection
    assert value == 42
    assert waited < 10, f"the other client waited {waited:.1f}s for the pinned connection"
    assert error is not None, "the idle-in-transaction client was not disconnected"
    assert "idle transaction timeout" in str(error) or isinstance(
        error, (asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError, OSError)
    ), error
    wait_until(lambda: stuck_backends() == 0, "the stuck backend to go")
