"""PostgreSQL itself enforces the budget: the consumers' role has CONNECTION LIMIT = budget.

A PostgreSQL of its own (max_connections 30, reserved 10: budget 20) whose app role is made by
the chart's db-role.sh, behind three PgBouncers each allowed max_db_connections 10: 30 server
connections planned against a budget of 20, as when more PgBouncer pods run than the plan
counted (a scale past the surge with the operator down, terminating pods). 66 clients loop
`SELECT pg_sleep(0.2)` through all three while `pg_stat_activity` is sampled every 0.2 s and a
superuser opens a fresh connection to PostgreSQL every second.

The same body runs with the role as the chart made it before (a superuser without a limit): the
peak then exceeds the budget, so the assertion on the limited role can fail.

db-role.sh itself is checked against this server in both modes: `ensure` (as the superuser:
creates, repairs, and is a no-op when nothing differs) and `check` (as the role: a missing or
too-high limit or a superuser role fails with the statement to run).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "devstack"))
import devstack  # noqa: E402

MAX_CONNECTIONS = 30
RESERVED = 10
BUDGET = MAX_CONNECTIONS - RESERVED
BOUNCERS = 3
PER_BOUNCER = 10  # 3 x 10 = 30 > 20: more PgBouncer capacity than the budget
CLIENTS = 66
SECONDS = 10.0


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    if not (devstack.ROOT / ".poolwarden-rootfs").exists():
        pytest.skip(
            f"integration tier needs PostgreSQL 17 + PgBouncer 1.24 in {devstack.ROOT}: "
            "run `make dev-deps`"
        )
    st = devstack.Stack(
        state=tmp_path_factory.mktemp("role-limit"),
        pg_port=devstack.free_port(),
        bouncer_port=devstack.free_port(),
        app_port=devstack.free_port(),
    )
    try:
        st.start_postgres(max_connections=MAX_CONNECTIONS, reserved=RESERVED)
        for _ in range(BOUNCERS):
            port = devstack.free_port()
            st.start_pgbouncer(
                name=f"pgbouncer-{port}",
                port=port,
                PGBOUNCER_DEFAULT_POOL_SIZE=str(PER_BOUNCER),
                PGBOUNCER_MAX_DB_CONNECTIONS=str(PER_BOUNCER),
                PGBOUNCER_QUERY_WAIT_TIMEOUT="5",
            )
        yield st
    finally:
        devstack.stop(st)


def bouncer_ports(st: devstack.Stack) -> list[int]:
    return [int(name.split("-")[1]) for name in st.pids if name.startswith("pgbouncer-")]


@dataclasses.dataclass
class Outcome:
    peak: int = 0
    samples: int = 0
    over_budget_samples: int = 0
    queries_ok: int = 0
    client_errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    admin_connects: int = 0
    admin_failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    longest_admin_gap: float = 0.0

    def report(self, label: str) -> str:
        return (
            f"{label}: peak {self.peak} of budget {BUDGET} over {self.samples} samples "
            f"({self.over_budget_samples} over); {self.queries_ok} queries ok; client errors "
            f"{dict(self.client_errors)}; superuser connects {self.admin_connects} ok, "
            f"failures {dict(self.admin_failures)}, longest gap {self.longest_admin_gap:.2f}s"
        )


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


async def drive(st: devstack.Stack) -> Outcome:
    out = Outcome()
    deadline = time.monotonic() + SECONDS
    ports = bouncer_ports(st)
    assert len(ports) == BOUNCERS
    superuser = dict(
        host="127.0.0.1",
        port=st.pg_port,
        user="postgres",
        password=st.superuser_password,
        database="postgres",
    )

    async def client(i: int) -> None:
        conn = None
        while time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = await asyncpg.connect(
                        host="127.0.0.1",
                        port=ports[i % BOUNCERS],
                        user=devstack.APP_USER,
                        password=st.app_password,
                        database=devstack.APP_DB,
                        timeout=10,
                    )
                await conn.execute("SELECT pg_sleep(0.2)")
                out.queries_ok += 1
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                out.client_errors[first_line(exc)] += 1
                if conn is not None:
                    conn.terminate()
                    conn = None
                await asyncio.sleep(0.2)
        if conn is not None:
            await conn.close()

    async def sample() -> None:
        conn = await asyncpg.connect(**superuser)
        try:
            while time.monotonic() < deadline:
                n = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 "
                    "AND backend_type = 'client backend'",
                    devstack.APP_USER,
                )
                out.samples += 1
                out.peak = max(out.peak, n)
                out.over_budget_samples += n > BUDGET
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    async def admin() -> None:
        last_ok = time.monotonic()
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                conn = await asyncpg.connect(**superuser, timeout=5)
                await conn.fetchval("SELECT 1")
                await conn.close()
                out.admin_connects += 1
                out.longest_admin_gap = max(out.longest_admin_gap, time.monotonic() - last_ok)
                last_ok = time.monotonic()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                out.admin_failures[first_line(exc)] += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        out.longest_admin_gap = max(out.longest_admin_gap, time.monotonic() - last_ok)

    await asyncio.gather(sample(), admin(), *(client(i) for i in range(CLIENTS)))
    return out


def settle(st: devstack.Stack) -> None:
    """Close every server connection the PgBouncers hold, so each run starts from none (also
    when the role's connections fill max_connections and a superuser cannot get in yet)."""
    for port in bouncer_ports(st):
        devstack.Bouncer(stack=st, name=f"pgbouncer-{port}", port=port).admin("RECONNECT")
    deadline = time.monotonic() + 30
    while True:
        try:
            left = int(
                st.psql(
                    f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{devstack.APP_USER}'"
                ).strip()
            )
        except RuntimeError as exc:  # "too many clients already" until PgBouncer closes some
            left = -1
            assert "too many clients" in str(exc), exc
        if left == 0:
            return
        assert time.monotonic() < deadline, "server connections of the role did not close"
        time.sleep(0.2)


def test_the_role_limit_holds_the_budget_with_more_pgbouncers_than_planned(db):
    assert (
        db.psql(
            f"SELECT rolsuper, rolconnlimit FROM pg_roles WHERE rolname = '{devstack.APP_USER}'"
        ).strip()
        == f"f,{BUDGET}"
    )
    settle(db)
    out = asyncio.run(drive(db))
    sys.stdout.write(out.report("role limit at the budget") + "\n")
    assert out.peak <= BUDGET, out.report("over budget")
    assert out.peak >= BUDGET - 2, out.report("the load never reached the budget")
    assert out.queries_ok > 0
    # admins keep `reserved`: a fresh superuser connection works every second throughout
    assert not out.admin_failures, out.report("admins locked out")
    assert out.admin_connects >= SECONDS - 2
    assert out.longest_admin_gap < 2.5, out.report("admins waited")


def test_without_the_role_limit_the_same_load_takes_the_role_past_the_budget(db):
    """The chart's role before: the image's superuser, no CONNECTION LIMIT."""
    db.psql(f"ALTER ROLE {devstack.APP_USER} SUPERUSER CONNECTION LIMIT -1", db="postgres")
    try:
        settle(db)
        out = asyncio.run(drive(db))
        sys.stdout.write(out.report("no role limit (superuser role)") + "\n")
        assert out.peak > BUDGET, out.report("the scenario does not overcommit")
    finally:
        settle(db)  # the superuser role's connections may fill max_connections: close them first
        res = db.db_role(
            "ensure",
            "--once",
            role=devstack.APP_USER,
            database=devstack.APP_DB,
            connection_limit=BUDGET,
        )
        assert res.returncode == 0, res.stderr
        settle(db)


# --- db-role.sh in both modes on this server ------------------------------------------------------


def check_as_role(db: devstack.Stack, limit: int = BUDGET):
    return db.db_role(
        "check",
        role=devstack.APP_USER,
        database=devstack.APP_DB,
        connection_limit=limit,
        user=devstack.APP_USER,
        login_password=db.app_password,
        name="db-role-check",
    )


def ensure(db: devstack.Stack, **kw):
    args = dict(role=devstack.APP_USER, database=devstack.APP_DB, connection_limit=BUDGET)
    args.update(kw)
    return db.db_role("ensure", "--once", **args)


def test_check_passes_on_the_limited_role_and_fails_with_the_statement_otherwise(db):
    ok = check_as_role(db)
    assert ok.returncode == 0, ok.stderr
    assert f"CONNECTION LIMIT {BUDGET} (budget {BUDGET})" in ok.stderr
    cases = [
        (
            "CONNECTION LIMIT -1",
            "has no CONNECTION LIMIT",
            f'ALTER ROLE "{devstack.APP_USER}" CONNECTION LIMIT {BUDGET};',
        ),
        (
            f"CONNECTION LIMIT {BUDGET + 5}",
            f"CONNECTION LIMIT {BUDGET + 5}, above the budget",
            f'ALTER ROLE "{devstack.APP_USER}" CONNECTION LIMIT {BUDGET};',
        ),
        (
            f"SUPERUSER CONNECTION LIMIT {BUDGET}",
            "is a superuser",
            f'ALTER ROLE "{devstack.APP_USER}" NOSUPERUSER CONNECTION LIMIT {BUDGET};',
        ),
    ]
    try:
        for change, reason, statement in cases:
            db.psql(f"ALTER ROLE {devstack.APP_USER} {change}", db="postgres")
            res = check_as_role(db)
            assert res.returncode == 1, (change, res.stderr)
            assert reason in res.stderr, (change, res.stderr)
            assert statement in res.stderr, (change, res.stderr)
            assert ensure(db).returncode == 0
        # a lower limit is safe: a note, not a failure
        assert check_as_role(db, limit=BUDGET + 5).returncode == 0
    finally:
        assert ensure(db).returncode == 0


def test_ensure_repairs_drift_and_is_a_no_op_when_nothing_differs(db):
    again = ensure(db, password=db.app_password)
    assert again.returncode == 0, again.stderr
    assert "password set" in again.stderr  # a fresh run sets the password once
    quiet = db.db_role(
        "ensure",
        "--once",
        role=devstack.APP_USER,
        database=devstack.APP_DB,
        connection_limit=BUDGET,
    )
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr  # nothing to change

    db.psql(f"ALTER ROLE {devstack.APP_USER} SUPERUSER CONNECTION LIMIT -1", db="postgres")
    db.psql(
        f"ALTER ROLE {devstack.APP_USER} RESET idle_in_transaction_session_timeout", db="postgres"
    )
    db.psql(f"ALTER DATABASE {devstack.APP_DB} OWNER TO postgres", db="postgres")
    fixed = ensure(db)
    assert fixed.returncode == 0, fixed.stderr
    assert "super=t" in fixed.stderr and f"limit={BUDGET}" in fixed.stderr, fixed.stderr
    row = db.psql(
        "SELECT r.rolsuper, r.rolconnlimit, pg_get_userbyid(d.datdba), r.rolconfig "
        "FROM pg_roles r, pg_database d "
        f"WHERE r.rolname = '{devstack.APP_USER}' AND d.datname = '{devstack.APP_DB}'",
        db="postgres",
    ).strip()
    assert row.startswith(f"f,{BUDGET},{devstack.APP_USER},"), row
    assert "idle_in_transaction_session_timeout=60s" in row, row

    # the budget changes (budget.reserved raised): the limit follows on the next run
    lowered = ensure(db, connection_limit=BUDGET - 5)
    assert f"limit={BUDGET - 5}" in lowered.stderr, lowered.stderr
    assert db.psql(
        f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{devstack.APP_USER}'"
    ).strip() == str(BUDGET - 5)
    assert ensure(db).returncode == 0

    bad = ensure(db, connection_limit=0)
    assert bad.returncode == 2 and "connection_limit '0' must be a positive integer" in bad.stderr


def test_the_sidecar_loop_reapplies_a_changed_config_and_is_ready_only_when_applied(db):
    """`ensure` as the PostgreSQL pod's db-role sidecar runs it: a loop reading role.conf."""
    name = "db-role-loop"
    args = dict(role=devstack.APP_USER, database=devstack.APP_DB, name=name)

    def ready() -> bool:
        cmd, env = db.db_role_command("ready", connection_limit=limit, **args)
        return subprocess.run(cmd, env=env, capture_output=True).returncode == 0

    def wait(check, what: str) -> None:
        deadline = time.monotonic() + 15
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def limit_now() -> int:
        return int(
            db.psql(
                f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{devstack.APP_USER}'"
            ).strip()
        )

    limit = BUDGET
    cmd, env = db.db_role_command(
        "ensure", connection_limit=limit, password=db.app_password, **args
    )
    env["PGROLE_INTERVAL"] = "2"
    log = db.state / name / "loop.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait(ready, "the first apply")
        # budget.reserved raised by a helm upgrade: only the mounted file changes
        limit = BUDGET - 4
        db.db_role_command("ensure", connection_limit=limit, **args)
        wait(lambda: limit_now() == limit, "the new limit")
        wait(ready, "ready with the new limit")
        # drift by hand is repaired by the periodic pass (PGROLE_INTERVAL)
        db.psql(f"ALTER ROLE {devstack.APP_USER} CONNECTION LIMIT -1", db="postgres")
        wait(lambda: limit_now() == limit, "the repaired limit")
        assert proc.poll() is None
        lines = [line for line in log.read_text().splitlines() if "role app:" in line]
        # one line per change: created/password, the new limit, the repair; nothing in between
        assert len(lines) == 3, lines
        assert "(password set)" in lines[0]
        assert f"limit={BUDGET} " in lines[1] and "now" in lines[1]
        assert "limit=-1" in lines[2]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert ensure(db).returncode == 0


def test_ensure_adopts_a_data_directory_whose_superuser_was_the_app_role(tmp_path):
    """A release from before: initdb made the app role the superuser; no `postgres` role."""
    (tmp_path / "old").mkdir()
    old = devstack.Stack(
        state=tmp_path / "old",
        pg_port=devstack.free_port(),
        bouncer_port=devstack.free_port(),
        app_port=devstack.free_port(),
    )
    try:
        old.start_postgres(max_connections=MAX_CONNECTIONS, reserved=RESERVED)
        old.psql(f"ALTER ROLE {devstack.APP_USER} SUPERUSER CONNECTION LIMIT -1", db="postgres")
        old.psql(
            "ALTER ROLE postgres RENAME TO initdb_user",
            user=devstack.APP_USER,
            password=old.app_password,
            db="postgres",
        )
        res = old.db_role(
            "ensure",
            "--once",
            role=devstack.APP_USER,
            database=devstack.APP_DB,
            connection_limit=BUDGET,
            password=old.app_password,
        )
        assert res.returncode == 0, res.stderr
        assert "superuser postgres created" in res.stderr, res.stderr
        rows = old.psql(
            "SELECT rolname, rolsuper, rolconnlimit FROM pg_roles "
            f"WHERE rolname IN ('postgres', '{devstack.APP_USER}') ORDER BY rolname",
            db="postgres",
        ).split()
        assert rows == [f"{devstack.APP_USER},f,{BUDGET}", "postgres,t,-1"], rows
    finally:
        devstack.stop(old)


# --- the chart as rendered, on the offline stand-in image's entrypoint ----------------------------

HELM = REPO / ".tools" / "bin" / "helm"


def render_database_side(**sets: str) -> dict:
    """The PostgreSQL pod's two containers and the db-role ConfigMap, as `helm template` renders."""
    args = [str(HELM), "template", "pw", str(REPO / "charts" / "poolwarden")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    docs = [d for d in yaml.safe_load_all(subprocess.check_output(args, text=True)) if d]
    [sts] = [d for d in docs if d["kind"] == "StatefulSet"]
    [cm] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-db-role")
    ]
    containers = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}
    return {
        "server": containers["postgresql"],
        "sidecar": containers["db-role"],
        "files": cm["data"],
    }


@pytest.mark.skipif(not HELM.exists(), reason=f"helm not found at {HELM}")
def test_the_rendered_sidecar_on_the_stand_in_entrypoint_applies_and_follows_the_budget(tmp_path):
    """postgres/entrypoint.sh with the chart's env (POSTGRES_USER=postgres), the db-role sidecar
    with the chart's command, env and mounted files; then a `helm upgrade` of budget.reserved."""
    if not (devstack.ROOT / ".poolwarden-rootfs").exists():
        pytest.skip("needs the trixie root: run `make dev-deps`")
    secrets = {"password": "app-pw-rendered", "postgres-password": "su-pw-rendered"}
    sets = {
        "postgresql.auth.password": secrets["password"],
        "postgresql.auth.postgresPassword": secrets["postgres-password"],
        "budget.reserved": "15",
    }
    pod = render_database_side(**sets)
    state = tmp_path / "pod"
    state.mkdir()
    st = devstack.Stack(
        state=state,
        pg_port=devstack.free_port(),
        bouncer_port=devstack.free_port(),
        app_port=devstack.free_port(),
        superuser_password=secrets["postgres-password"],
    )
    uid, gid = devstack.root_user_ids()
    os.chown(state, uid, gid)
    mounts = {  # the pod's mounts, as directories of the state dir (/mnt/state in the root)
        "/etc/poolwarden/db-role": "db-role",
        "/etc/poolwarden/db-secret": "db-secret",
        "/var/run/poolwarden-db-role": "db-role-state",
    }
    for sub in mounts.values():
        (state / sub).mkdir()
        os.chown(state / sub, uid, gid)

    def write_files(files: dict[str, str]) -> None:
        for key, text in files.items():
            tmp = state / "db-role" / f".{key}.tmp"
            tmp.write_text(text)
            tmp.replace(state / "db-role" / key)  # atomically, as the kubelet swaps a ConfigMap

    write_files(pod["files"])
    for key, value in secrets.items():
        (state / "db-secret" / key).write_text(value)
        os.chown(state / "db-secret" / key, uid, gid)
    (state / "entrypoint.sh").write_text((REPO / "postgres" / "entrypoint.sh").read_text())

    def mapped(value: str) -> str:
        for path, sub in mounts.items():
            value = value.replace(path, f"/mnt/state/{sub}")
        return value

    def env_of(c: dict) -> dict[str, str]:
        env = {}
        for e in c["env"]:
            if "value" in e:
                env[e["name"]] = mapped(e["value"])
            else:
                env[e["name"]] = secrets[e["valueFrom"]["secretKeyRef"]["key"]]
        return env

    server_env = env_of(pod["server"])
    assert server_env["POSTGRES_USER"] == "postgres"
    server_env.update(PGDATA="/mnt/state/data/pgdata")
    sidecar_env = env_of(pod["sidecar"])
    sidecar_env.update(PGPORT=str(st.pg_port))
    try:
        args = [
            *pod["server"]["args"],
            "-c",
            f"port={st.pg_port}",
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=/mnt/state",
        ]
        st._spawn(
            "postgres",
            st.chroot_cmd("bash", "/mnt/state/entrypoint.sh", *args),
            env=dict(os.environ, **server_env),
        )
        sidecar_cmd = [mapped(a) for a in pod["sidecar"]["command"]]
        st._spawn("db-role", st.chroot_cmd(*sidecar_cmd), env=dict(os.environ, **sidecar_env))
        probe = [mapped(a) for a in pod["sidecar"]["readinessProbe"]["exec"]["command"]]

        def ready() -> bool:
            cmd = st.chroot_cmd(*probe)
            return subprocess.run(cmd, env=dict(os.environ, **sidecar_env)).returncode == 0

        def wait(check, what: str, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while not check():
                log = st.log_file("db-role").read_text(errors="replace")
                assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log}"
                time.sleep(0.5)

        wait(ready, "the sidecar's first apply")
        role = st.psql(
            "SELECT r.rolsuper, r.rolconnlimit, pg_get_userbyid(d.datdba) FROM pg_roles r, "
            "pg_database d WHERE r.rolname = 'poolwarden' AND d.datname = 'poolwarden'",
            db="postgres",
        ).strip()
        assert role == "f,85,poolwarden", role  # 100 - 15
        # the app's role logs in with its password, and can create its tables (owner, PG 17)
        st.psql(
            "CREATE TABLE t (id int)",
            user="poolwarden",
            password=secrets["password"],
            db="poolwarden",
        )

        # helm upgrade --set budget.reserved=25: only the ConfigMap changes
        upgraded = render_database_side(**{**sets, "budget.reserved": "25"})
        assert upgraded["sidecar"] == pod["sidecar"] and upgraded["server"] == pod["server"]
        write_files(upgraded["files"])
        wait(
            lambda: (
                st.psql(
                    "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'poolwarden'", db="postgres"
                ).strip()
                == "75"
            ),
            "the new limit",
        )
        wait(ready, "ready with the new limit")
        assert st.procs["postgres"].poll() is None  # PostgreSQL was not restarted
        lines = [
            line
            for line in st.log_file("db-role").read_text().splitlines()
            if "role poolwarden:" in line
        ]
        assert len(lines) == 2, lines
    finally:
        devstack.stop(st)
