"""Integration tier: real PostgreSQL 17 and PgBouncer 1.24 (from the trixie root, started by
tools/devstack on free 127.0.0.1 ports), the app under real gunicorn + uvicorn workers.

Needs `make dev-deps`; without the trixie root every test here is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolwarden import planfile

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "devstack"))
import devstack  # noqa: E402
from appserver import App, plan_file_for  # noqa: E402

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    if not (devstack.ROOT / ".poolwarden-rootfs").exists():
        pytest.skip(f"integration tier needs PostgreSQL 17 + PgBouncer 1.24 in {devstack.ROOT}: "
                    "run `make dev-deps`")
    state = tmp_path_factory.mktemp("stack")
    st = devstack.Stack(state=state, pg_port=devstack.free_port(),
                        bouncer_port=devstack.free_port(), app_port=devstack.free_port())
    try:
        st.start_postgres(max_connections=150)
        st.start_pgbouncer()
        yield st
    finally:
        devstack.stop(st)


@pytest.fixture
def start_app(stack: devstack.Stack, tmp_path: Path) -> Iterator:
    """Factory: start_app(workers=2, preload=False, via_bouncer=True, plan=None, **env)."""
    started: list[App] = []

    def start(*, workers: int = 2, preload: bool = False, via_bouncer: bool = True,
              plan: planfile.PoolPlan | None = None,
              wsgi: str = "poolwarden_fastapi_app.main:create_app()",
              chdir: Path | None = None, wait_ready: bool = True, **env: str) -> App:
        port = devstack.free_port()
        name = f"app-{port}"
        plan_file = plan_file_for(tmp_path, name, plan, env)
        proc = stack.start_app(workers=workers, preload=preload, via_bouncer=via_bouncer,
                               port=port, name=name, wsgi=wsgi, chdir=chdir,
                               wait_ready=wait_ready, **env)
        app = App(name=name, url=f"http://127.0.0.1:{port}", workers=workers,
                  plan_file=plan_file, log_file=stack.log_file(name), pid=proc.pid)
        started.append(app)
        return app

    yield start
    for app in started:
        stack.stop_one(app.name)


@pytest.fixture
def start_bouncer(stack: devstack.Stack) -> Iterator:
    """Factory: a PgBouncer of its own (own port, config and sizing dir) for one test."""
    started: list[devstack.Bouncer] = []

    def start(**env: str) -> devstack.Bouncer:
        port = devstack.free_port()
        bouncer = stack.start_pgbouncer(name=f"pgbouncer-{port}", port=port, **env)
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        stack.stop_one(bouncer.name)


def server_connections(stack: devstack.Stack, *, user: str = devstack.APP_USER) -> int:
    """Backends of `user` on PostgreSQL right now (psql in the root; fine for polling)."""
    out = stack.psql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}' "
                     "AND backend_type = 'client backend'")
    return int(out.strip())


def dump_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
