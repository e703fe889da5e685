"""The local data path: PostgreSQL 17 and PgBouncer 1.24 from the trixie root, the app from .venv.

Everything listens on 127.0.0.1. The servers run from `.tools/trixie-root` (make trixie-root)
through `chroot-run.sh`, as the root's unprivileged `postgres` user; the app runs on the host
under real gunicorn + uvicorn workers. Used by `make dev` / `make dev-down` and by the
integration tests (which import this module and start one stack per test session).

    python tools/devstack/devstack.py up STATE_DIR      # start (idempotent), print URLs
    python tools/devstack/devstack.py down STATE_DIR    # stop what `up` started; keep the data

Standard library only, so it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("TRIXIE_ROOT", REPO / ".tools" / "trixie-root"))
CHROOT_RUN = REPO / "tools" / "devstack" / "chroot-run.sh"
PGBOUNCER_DIR = REPO / "pgbouncer"
DB_ROLE_SCRIPT = REPO / "charts" / "poolwarden" / "files" / "db-role.sh"
PG_BIN = "/usr/lib/postgresql/17/bin"
APP_DB = "app"
APP_USER = "app"
# Connections of max_connections kept out of the app role's CONNECTION LIMIT (the chart's
# budget.reserved), and the role's idle_in_transaction_session_timeout in seconds.
RESERVED = 10
IDLE_IN_TRANSACTION_TIMEOUT = 60


def log(message: str) -> None:
    sys.stdout.write(f">> devstack: {message}\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def root_user_ids(name: str = "postgres") -> tuple[int, int]:
    """uid/gid of a user of the trixie root (not of the host)."""
    for line in (ROOT / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise RuntimeError(f"user {name!r} not found in {ROOT}/etc/passwd; rebuild: make trixie-root")


def wait_for(check, what: str, *, timeout: float = 30.0, proc: subprocess.Popen | None = None,
             log_path: Path | None = None):
    """Poll `check()` until it returns a truthy value; fail with the process log's tail."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None

    def tail() -> str:
        if log_path is None or not log_path.exists():
            return ""
        lines = log_path.read_text(errors="replace").splitlines()[-15:]
        return f"\n--- last lines of {log_path}:\n" + "\n".join(lines)

    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with status {proc.returncode}{tail()}")
        try:
            result = check()
            if result:
                return result
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s (last error: {last_error})"
                               f"{tail()}")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def app_ready(port: int) -> bool:
    """True when a worker answers /readyz with 200 (the database is reachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


@dataclasses.dataclass
class Stack:
    """One running (or configured) stack; ports and secrets are chosen at creation."""

    state: Path
    pg_port: int
    bouncer_port: int
    app_port: int
    superuser_password: str = "postgres-dev-password"
    app_password: str = "app-dev-password"
    admin_password: str = "admin-dev-password"
    stats_password: str = "stats-dev-password"
    # The app role's CONNECTION LIMIT (max_connections - reserved), set by start_postgres.
    connection_limit: int = 0
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    # The Popen objects of this process's children (not saved): waited for on stop.
    procs: dict[str, subprocess.Popen] = dataclasses.field(default_factory=dict, repr=False,
                                                           compare=False)

    # -- locations ------------------------------------------------------------------------
    @property
    def pg_dir(self) -> Path:
        return self.state / "pg"

    @property
    def sizing_dir(self) -> Path:
        """Stands in for the main PgBouncer's mounted sizing ConfigMap (/etc/pgbouncer/sizing)."""
        return self.state / "pgbouncer" / "sizing"

    @property
    def plan_dir(self) -> Path:
        """Stands in for the mounted plan ConfigMap (`/etc/poolwarden/plan`)."""
        return self.state / "app" / "plan"

    def log_file(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def dsn(self, *, via_bouncer: bool = True, superuser: bool = False) -> str:
        port = self.bouncer_port if via_bouncer else self.pg_port
        if superuser:
            return f"postgresql://postgres:{self.superuser_password}@127.0.0.1:{port}/{APP_DB}"
        return f"postgresql://{APP_USER}:{self.app_password}@127.0.0.1:{port}/{APP_DB}"

    def app_env(self, *, via_bouncer: bool = True, **overrides: str) -> dict[str, str]:
        """POOLWARDEN_* settings for an app talking to this stack."""
        env = {
            "POOLWARDEN_DB_HOST": "127.0.0.1",
            "POOLWARDEN_DB_PORT": str(self.bouncer_port if via_bouncer else self.pg_port),
            "POOLWARDEN_DB_NAME": APP_DB,
            "POOLWARDEN_DB_USER": APP_USER,
            "POOLWARDEN_DB_PASSWORD": self.app_password,
            "POOLWARDEN_PLAN_FILE": str(self.plan_dir / "plan.json"),
        }
        env.update(overrides)
        return env

    # -- running things in the root -------------------------------------------------------
    def chroot_cmd(self, *command: str) -> list[str]:
        return [str(CHROOT_RUN), str(ROOT), str(self.state), str(PGBOUNCER_DIR), "--", *command]

    def psql(self, sql: str, *, port: int | None = None, user: str = "postgres",
             password: str | None = None, db: str = APP_DB, headers: bool = False) -> str:
        """Run SQL with the root's psql (simple protocol: also works on PgBouncer's console);
        unaligned, comma-separated, with a header line if `headers`."""
        env = dict(os.environ, PGPASSWORD=password or self.superuser_password,
                   PGCONNECT_TIMEOUT="5")
        out = subprocess.run(
            self.chroot_cmd("psql", "-X", "-A", *(("-P", "footer=off") if headers else ("-t",)),
                            "-F", ",", "-v", "ON_ERROR_STOP=1",
                            "-h", "127.0.0.1", "-p", str(port or self.pg_port), "-U", user,
                            "-d", db, "-c", sql),
            env=env, capture_output=True, text=True, timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {out.stderr.strip()}")
        return out.stdout

    def admin(self, command: str) -> list[list[str]]:
        """An admin-console command on the main PgBouncer."""
        return Bouncer(stack=self, name="pgbouncer", port=self.bouncer_port).admin(command)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.Popen:
        self.log_file(name).parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_file(name), "ab")  # noqa: SIM115  (owned by the child)
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        logf.close()
        self.pids[name] = proc.pid
        self.procs[name] = proc
        return proc

    def stop_one(self, name: str) -> None:
        """Stop one process this stack started (SIGINT for PostgreSQL: fast shutdown)."""
        pid = self.pids.pop(name, None)
        proc = self.procs.pop(name, None)
        if pid is None:
            return
        sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
        log(f"stopping {name} (pid {pid})")
        stop_process(pid, name, sig=sig)
        if proc is not None:
            proc.wait()

    # -- PostgreSQL -----------------------------------------------------------------------
    def start_postgres(self, *, max_connections: int = 100,
                       reserved: int = RESERVED) -> subprocess.Popen:
        uid, gid = root_user_ids()
        self.state.chmod(0o755)  # the root's postgres user enters it as /mnt/state
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.pg_dir, uid, gid)
        if not (self.pg_dir / "data" / "PG_VERSION").exists():
            log(f"initdb {self.pg_dir / 'data'} (PostgreSQL 17, SCRAM-SHA-256)")
            pwfile = self.pg_dir / "pwfile"
            pwfile.write_text(self.superuser_password + "\n")
            os.chown(pwfile, uid, gid)
            out = subprocess.run(
                self.chroot_cmd("initdb", "-D", "/mnt/state/pg/data", "-U", "postgres",
                                "--auth=scram-sha-256", "--pwfile=/mnt/state/pg/pwfile",
                                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                capture_output=True, text=True,
            )
            if out.returncode != 0:
                raise RuntimeError(f"initdb failed: {out.stdout}{out.stderr}")
            pwfile.unlink()
        log(f"PostgreSQL 17 on 127.0.0.1:{self.pg_port}")
        proc = self._spawn("postgres", self.chroot_cmd(
            "postgres", "-D", "/mnt/state/pg/data", "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={self.pg_port}", "-c", "unix_socket_directories=/mnt/state/pg",
            "-c", f"max_connections={max_connections}", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning",
        ))
        wait_for(lambda: self.psql("SELECT 1", db="postgres").strip() == "1",
                 "PostgreSQL", proc=proc, log_path=self.log_file("postgres"))
        self.connection_limit = max_connections - reserved
        self._bootstrap_roles()
        return proc

    def _bootstrap_roles(self) -> None:
        """The app's role and database, by the chart's own script (charts/poolwarden/files/
        db-role.sh): NOSUPERUSER, CONNECTION LIMIT = the budget, owner of the database."""
        out = self.db_role("ensure", "--once", role=APP_USER, database=APP_DB,
                           connection_limit=self.connection_limit,
                           password=self.app_password)
        if out.returncode != 0:
            raise RuntimeError(f"db-role.sh ensure failed: {out.stderr.strip()}")
        # PgBouncer cannot pass `jit` through (PostgreSQL does not report it): set it per role.
        self.psql(f"ALTER ROLE {APP_USER} SET jit = off", db="postgres")

    def db_role(self, *args: str, **config) -> subprocess.CompletedProcess:
        """Run the chart's db-role.sh (`ensure --once` as the superuser, `check` as the role)
        from the trixie root, with its config file in the state dir; returns the process."""
        cmd, env = self.db_role_command(*args, **config)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    def db_role_command(self, *args: str, role: str, database: str, connection_limit: int,
                        password: str | None = None, user: str = "postgres",
                        login_password: str | None = None,
                        idle_timeout: int = IDLE_IN_TRANSACTION_TIMEOUT,
                        name: str = "db-role") -> tuple[list[str], dict[str, str]]:
        """The command line and environment of db-role.sh ARGS; writes role.conf (and the
        role's password file) to STATE/NAME, where the script and its state live."""
        uid, gid = root_user_ids()
        work = self.state / name
        work.mkdir(parents=True, exist_ok=True)
        os.chown(work, uid, gid)
        (work / "db-role.sh").write_text(DB_ROLE_SCRIPT.read_text())
        conf = work / ".role.conf.tmp"  # replaced atomically, as the kubelet does
        conf.write_text(
            f"role={role}\ndatabase={database}\nconnection_limit={connection_limit}\n"
            f"idle_in_transaction_session_timeout={idle_timeout}\n")
        conf.replace(work / "role.conf")
        env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(self.pg_port), PGUSER=user,
                   PGPASSWORD=login_password or self.superuser_password,
                   PGDATABASE="postgres" if args[0] == "ensure" else database,
                   PGROLE_CONFIG=f"/mnt/state/{name}/role.conf",
                   PGROLE_STATE_DIR=f"/mnt/state/{name}/state", PGROLE_WAIT="30")
        if password is not None:
            pwfile = work / "password"
            pwfile.write_text(password)
            os.chown(pwfile, uid, gid)
            pwfile.chmod(0o600)
            env["PGROLE_PASSWORD_FILE"] = f"/mnt/state/{name}/password"
        return self.chroot_cmd("bash", f"/mnt/state/{name}/db-role.sh", *args), env

    # -- PgBouncer ------------------------------------------------------------------------
    def bouncer_env(self, name: str = "pgbouncer", port: int | None = None,
                    **overrides: str) -> dict[str, str]:
        env = {
            "PGBOUNCER_CONF_DIR": f"/mnt/state/{name}/conf",
            "PGBOUNCER_SIZING_DIR": f"/mnt/state/{name}/sizing",
            "PGBOUNCER_TEMPLATE": "/mnt/ro/pgbouncer.ini.tmpl",
            "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
            "PGBOUNCER_LISTEN_PORT": str(port or self.bouncer_port),
            "PGBOUNCER_DB_HOST": "127.0.0.1",
            "PGBOUNCER_DB_PORT": str(self.pg_port),
            "PGBOUNCER_DB_NAME": APP_DB,
            "PGBOUNCER_DB_USER": APP_USER,
            "PGBOUNCER_DB_PASSWORD": self.app_password,
            "PGBOUNCER_ADMIN_PASSWORD": self.admin_password,
            "PGBOUNCER_STATS_PASSWORD": self.stats_password,
            "PGBOUNCER_DEFAULT_POOL_SIZE": "20",
            "PGBOUNCER_MAX_DB_CONNECTIONS": "40",
        }
        env.update(overrides)
        return env

    def start_pgbouncer(self, name: str = "pgbouncer", port: int | None = None,
                        **env_overrides: str) -> Bouncer:
        """Run pgbouncer/entrypoint.sh (the image's entrypoint) from the trixie root."""
        port = port or self.bouncer_port
        bouncer = Bouncer(stack=self, name=name, port=port)
        uid, gid = root_user_ids()
        for path in (bouncer.dir, bouncer.dir / "conf", bouncer.sizing_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, uid, gid)
        log(f"PgBouncer 1.24 on 127.0.0.1:{port} (transaction mode)")
        env = dict(os.environ, **self.bouncer_env(name, port, **env_overrides))
        bouncer.proc = self._spawn(name, self.chroot_cmd("bash", "/mnt/ro/entrypoint.sh"),
                                   env=env)
        wait_for(lambda: bouncer.admin("SHOW VERSION"), "PgBouncer", proc=bouncer.proc,
                 log_path=self.log_file(name))
        return bouncer

    def write_sizing(self, text: str) -> None:
        Bouncer(stack=self, name="pgbouncer", port=self.bouncer_port).write_sizing(text)

    # -- the app --------------------------------------------------------------------------
    def start_app(self, *, workers: int = 2, preload: bool = False, via_bouncer: bool = True,
                  port: int | None = None, name: str = "app",
                  wsgi: str = "poolwarden_fastapi_app.main:create_app()",
                  chdir: Path | None = None, wait_ready: bool = True,
                  **env_overrides: str) -> subprocess.Popen:
        port = port or self.app_port
        self.plan_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **self.app_env(via_bouncer=via_bouncer, **env_overrides))
        env["POOLWARDEN_WORKERS"] = str(workers)
        cmd = [str(Path(sys.executable).parent / "gunicorn"),
               "-c", str(REPO / "app" / "gunicorn.conf.py"),
               "-b", f"127.0.0.1:{port}", "--chdir", str(chdir or REPO / "app")]
        if preload:
            cmd.append("--preload")
        cmd.append(wsgi)
        log(f"app ({workers} gunicorn workers) on http://127.0.0.1:{port}")
        proc = self._spawn(name, cmd, env=env)
        ready = app_ready if wait_ready else port_open  # port only: the database may be down
        wait_for(lambda: ready(port), f"app {name}", proc=proc, timeout=90,
                 log_path=self.log_file(name))
        return proc

    # -- state on disk, for `make dev-down` -----------------------------------------------
    def save(self) -> None:
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name != "procs"}
        data["state"] = str(self.state)
        (self.state / "stack.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, state: Path) -> Stack | None:
        path = state / "stack.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["state"] = Path(data["state"])
        return cls(**data)


@dataclasses.dataclass
class Bouncer:
    """One PgBouncer of a stack (its own port, config dir and sizing dir)."""

    stack: Stack
    name: str
    port: int
    proc: subprocess.Popen | None = None

    @property
    def dir(self) -> Path:
        return self.stack.state / self.name

    @property
    def sizing_dir(self) -> Path:
        return self.dir / "sizing"

    def admin(self, command: str) -> list[list[str]]:
        """An admin-console command (SHOW POOLS, RELOAD, ...) as rows of strings."""
        text = self.stack.psql(command, port=self.port, user="pgbouncer_admin",
                               password=self.stack.admin_password, db="pgbouncer")
        return [line.split(",") for line in text.splitlines() if line]

    def show(self, what: str) -> list[dict[str, str]]:
        """`SHOW <what>` on the admin console as one dict per row, keyed by column name
        (the columns of SHOW POOLS, SERVERS, DATABASES differ between PgBouncer versions)."""
        text = self.stack.psql(f"SHOW {what}", port=self.port, user="pgbouncer_admin",
                               password=self.stack.admin_password, db="pgbouncer",
                               headers=True)
        header, *rows = [line.split(",") for line in text.splitlines() if line]
        return [dict(zip(header, row, strict=True)) for row in rows]

    def write_sizing(self, text: str) -> None:
        """Replace the sizing include atomically, as the kubelet does for a ConfigMap."""
        self.sizing_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.sizing_dir / ".sizing.ini.tmp"
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.sizing_dir / "sizing.ini")

    def log_text(self) -> str:
        path = self.stack.log_file(self.name)
        return path.read_text(errors="replace") if path.exists() else ""


def stop_process(pid: int, name: str, *, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal the process we started (as Kubernetes signals PID 1); SIGKILL its group after
    `timeout`."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    log(f"{name} did not stop within {timeout:.0f}s; killing it")
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(stack: Stack) -> None:
    """Stop in reverse order: app, PgBouncer, PostgreSQL (fast shutdown, data kept)."""
    def rank(name: str) -> int:  # apps first, then PgBouncers, PostgreSQL last
        return 2 if name == "postgres" else 1 if name.startswith("pgbouncer") else 0

    for name in sorted(stack.pids, key=rank):
        stack.stop_one(name)


def up(state: Path, *, workers: int = 3) -> Stack:
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    previous = Stack.load(state)
    if previous and previous.pids and all(_alive(pid) for pid in previous.pids.values()):
        log("already running")
        print_urls(previous)
        return previous
    if previous:
        stop(previous)
    stack = Stack(state=state, pg_port=int(os.environ.get("DEV_PG_PORT", 55432)),
                  bouncer_port=int(os.environ.get("DEV_PGBOUNCER_PORT", 56432)),
                  app_port=int(os.environ.get("DEV_APP_PORT", 8000)))
    try:
        stack.start_postgres()
        stack.start_pgbouncer()
        stack.start_app(workers=workers)
    finally:
        stack.save()
    print_urls(stack)
    return stack


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def print_urls(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.app_port}"
    admin = (f"PGPASSWORD={stack.admin_password} psql -h 127.0.0.1 -p {stack.bouncer_port}"
             " -U pgbouncer_admin pgbouncer")
    sys.stdout.write(f"""
  app          {base}/items   {base}/pool   {base}/metrics   {base}/docs
  PgBouncer    {stack.dsn()}
  PostgreSQL   {stack.dsn(via_bouncer=False, superuser=True)}
  admin        {admin}
  plan file    {stack.plan_dir / 'plan.json'}   (edit it: the app resizes its pools live)
  sizing       {stack.sizing_dir / 'sizing.ini'}   (PgBouncer RELOADs when it changes)
  logs         {stack.state / 'logs'}/
  stop         make dev-down
""")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("state", type=Path)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("DEV_WORKERS", 3)))
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.state, workers=args.workers)
    else:
        stack = Stack.load(args.state.resolve())
        if stack is None or not stack.pids:
            log("nothing running")
            return 0
        stop(stack)
        stack.save()
        log(f"stopped; data kept in {args.state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
