"""The README's Flask snippet, read from README.md as printed there, under gunicorn gthread
with --preload: it serves from every worker through PgBouncer, answers /pool, and follows the
plan file. Only the database URL is replaced (by this stack's)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from poolwarden import planfile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packaging"))
import readme  # noqa: E402

README_APP = readme.flask_snippet()
README_GUNICORN_CONF = readme.flask_gunicorn_conf()
README_COMMAND = readme.flask_command()
README_URL = "postgresql+psycopg://app:secret@pgbouncer:6432/app"


def test_readme_flask_snippet_serves_and_follows_the_plan(start_flask, stack, tmp_path):
    url = stack.dsn(via_bouncer=True).replace("postgresql://", "postgresql+psycopg://")
    assert README_URL in README_APP
    words = README_COMMAND.split()
    assert words[:3] == ["gunicorn", "-c", "gunicorn.conf.py"] and words[-1] == "app:app", words
    (tmp_path / "app.py").write_text(README_APP.replace(README_URL, url))
    (tmp_path / "gunicorn.conf.py").write_text(README_GUNICORN_CONF)
    args = README_COMMAND.split()[3:-1]  # -k gthread -w 2 --threads 4 --preload
    app = start_flask(workers=2, threads=4, conf=tmp_path / "gunicorn.conf.py", chdir=tmp_path,
                      wsgi="app:app", args=(*args, "--no-control-socket"), wait_ready=False)
    with httpx.Client(base_url=app.url, timeout=10) as client:
        answers = [client.get("/now", headers={"Connection": "close"}) for _ in range(10)]
    assert [r.status_code for r in answers] == [200] * 10, [r.text for r in answers]
    assert len(app.pools()) == 2
    app.write_plan(planfile.PoolPlan(pool_size=3, max_overflow=1, generation=7))
    for status in app.wait_for_plan(7).values():
        assert (status["pool_size"], status["max_overflow"]) == (3, 1)
