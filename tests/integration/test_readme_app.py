"""The README's FastAPI snippet, exactly as documented, under gunicorn + uvicorn workers through
PgBouncer: it answers, and its pools follow the plan file, counted in PgBouncer's SHOW CLIENTS."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import devstack
import httpx
from appserver import App

from poolwarden import planfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))
import readme  # noqa: E402

WORKERS = 2


def clients(stack: devstack.Stack) -> int:
    """The snippet's connections: its application_name is `<hostname>/<pid>` (the default;
    every other app of this tier names its instance)."""
    prefix = f"{socket.gethostname()[:40]}/"
    bouncer = devstack.Bouncer(stack=stack, name="pgbouncer", port=stack.bouncer_port)
    return sum(1 for c in bouncer.show("CLIENTS")
               if c.get("application_name", "").startswith(prefix))


async def hammer(url: str, seconds: float) -> list[int]:
    """16 concurrent clients on /now, a new connection each (spread over the workers)."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def loop() -> None:
            while time.monotonic() < deadline:
                response = await client.get("/now", headers={"Connection": "close"})
                statuses.append(response.status_code)
        await asyncio.gather(*(loop() for _ in range(16)))
    return statuses


def wait_answering(app: App, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{app.url}/now", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, app.log_text()[-2000:]
        time.sleep(0.2)


def test_readme_snippet_serves_and_follows_the_plan(start_app, stack, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "readme_app.py").write_text(readme.fastapi_snippet())
    url = (f"postgresql+asyncpg://{devstack.APP_USER}:{stack.app_password}@127.0.0.1:"
           f"{stack.bouncer_port}/{devstack.APP_DB}")
    first = planfile.PoolPlan(pool_size=3, max_overflow=0, generation=1)
    app = start_app(workers=WORKERS, plan=first, wsgi="readme_app:app", chdir=code,
                    wait_ready=False, DATABASE_URL=url)
    wait_answering(app)

    statuses = asyncio.run(hammer(app.url, 3))
    assert set(statuses) == {200}, statuses
    busy = clients(stack)
    assert WORKERS * 1 < busy <= WORKERS * 3, busy  # more than the next plan allows

    app.write_plan(planfile.PoolPlan(pool_size=1, max_overflow=0, generation=2))
    deadline = time.monotonic() + 20
    while True:  # every worker swaps on its own watch; traffic makes each use its new pool
        statuses = asyncio.run(hammer(app.url, 1))
        assert set(statuses) == {200}, statuses
        if clients(stack) <= WORKERS * 1:
            break
        assert time.monotonic() < deadline, f"still {clients(stack)} clients"
