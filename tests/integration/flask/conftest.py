"""The Flask reference service (flask-app/) under real gunicorn gthread workers:
`start_flask(workers=2, threads=4, preload=True, ...)` returns an appserver.App."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import devstack
import pytest
from appserver import App, plan_file_for

from poolwarden import planfile

FLASK_APP = devstack.REPO / "flask-app"
WSGI = "poolwarden_flask_app.main:create_app()"


@pytest.fixture
def start_flask(stack: devstack.Stack, tmp_path: Path) -> Iterator:
    """Factory: start_flask(workers=2, threads=4, preload=True, via_bouncer=True, plan=None,
    wsgi=..., chdir=flask-app, conf=flask-app/gunicorn.conf.py, args=(), **env)."""
    started: list[App] = []

    def start(*, workers: int = 2, threads: int = 4, preload: bool = True,
              via_bouncer: bool = True, plan: planfile.PoolPlan | None = None,
              wsgi: str = WSGI, chdir: Path = FLASK_APP,
              conf: Path | None = FLASK_APP / "gunicorn.conf.py",
              wait_ready: bool = True, args: tuple[str, ...] = (), **env: str) -> App:
        port = devstack.free_port()
        name = f"flask-{port}"
        plan_file = plan_file_for(tmp_path, name, plan, env)
        env.update(POOLWARDEN_WORKERS=str(workers), POOLWARDEN_THREADS=str(threads),
                   POOLWARDEN_PRELOAD="true" if preload else "false")
        full_env = dict(devstack.os.environ, **stack.app_env(via_bouncer=via_bouncer, **env))
        cmd = [str(Path(sys.executable).parent / "gunicorn")]
        if conf is not None:
            cmd += ["-c", str(conf)]
        else:  # the bare server the naive app runs under: no poolwarden anywhere
            cmd += ["-k", "gthread", "-w", str(workers), "--threads", str(threads),
                    "--no-control-socket"]
            cmd += ["--preload"] if preload else []
        cmd += [*args, "-b", f"127.0.0.1:{port}", "--chdir", str(chdir), wsgi]
        devstack.log(f"flask ({workers} workers x {threads} threads) on http://127.0.0.1:{port}")
        proc = stack._spawn(name, cmd, env=full_env)
        ready = devstack.app_ready if wait_ready else devstack.port_open
        devstack.wait_for(lambda: ready(port), f"flask {name}", proc=proc, timeout=90,
                          log_path=stack.log_file(name))
        app = App(name=name, url=f"http://127.0.0.1:{port}", workers=workers,
                  plan_file=plan_file, log_file=stack.log_file(name), pid=proc.pid)
        started.append(app)
        return app

    yield start
    for app in started:
        stack.stop_one(app.name)
