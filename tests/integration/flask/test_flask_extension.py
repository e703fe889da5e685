"""poolwarden.flask in this process on the real PostgreSQL: a session per request committed
before the response (a failed commit is an error answer, never a success), rolled back on an
error answer, a read-only session that cannot write, 503 + Retry-After on a pool timeout,
and every lease and connection given back after each request."""

from __future__ import annotations

import os
import threading
import time

import pytest
from flask import Flask, jsonify
from sqlalchemy import create_engine, exc, text

from poolwarden import planfile, threaded
from poolwarden.flask import PoolWarden

TABLE = "pw_flask_ext"


def make_app(stack, tmp_path, **options) -> tuple[Flask, PoolWarden]:
    db = PoolWarden()
    app = Flask(__name__)
    url = stack.dsn(via_bouncer=False).replace("postgresql://", "postgresql+psycopg://")
    options.setdefault("pool_size", 2)
    db.init_app(app, url=url, plan_file=tmp_path / "plan" / "plan.json",
                connect_args={"application_name": f"flask-ext-{os.getpid()}"}, **options)

    @app.errorhandler(exc.IntegrityError)
    def conflict(error):
        return jsonify({"detail": "conflicts with existing data"}), 409

    @app.post("/pairs/<int:k>")
    def add_pair(k: int):
        # The constraint is deferred: both inserts succeed, the commit fails.
        db.session.execute(text(f"INSERT INTO {TABLE} (k) VALUES (:k), (:k)"), {"k": k})
        return jsonify({"added": k}), 201

    @app.post("/one/<int:k>")
    def add_one(k: int):
        db.session.execute(text(f"INSERT INTO {TABLE} (k) VALUES (:k)"), {"k": k})
        return jsonify({"added": k}), 201

    @app.post("/refused/<int:k>")
    def add_then_refuse(k: int):
        db.session.execute(text(f"INSERT INTO {TABLE} (k) VALUES (:k)"), {"k": k})
        return jsonify({"detail": "refused after writing"}), 400

    @app.post("/readonly/<int:k>")
    def write_readonly(k: int):
        db.readonly_session.execute(text(f"INSERT INTO {TABLE} (k) VALUES (:k)"), {"k": k})
        return jsonify({"added": k}), 201

    @app.get("/hold")
    def hold():
        db.readonly_session.execute(text("SELECT pg_sleep(1.0)"))
        return jsonify({"held": True})

    return app, db


@pytest.fixture
def table(stack):
    stack.psql(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} "
               "(k int, CONSTRAINT pw_flask_ext_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED); "
               f"GRANT ALL ON {TABLE} TO app")
    yield
    stack.psql(f"DROP TABLE IF EXISTS {TABLE}")


def rows(stack, k: int) -> int:
    return int(stack.psql(f"SELECT count(*) FROM {TABLE} WHERE k = {k}").strip())


def test_commit_before_the_response_and_a_failed_commit_is_an_error(stack, tmp_path, table):
    app, db = make_app(stack, tmp_path)
    client = app.test_client()
    try:
        assert client.post("/one/1").status_code == 201
        assert rows(stack, 1) == 1  # committed when the response left

        response = client.post("/pairs/2")
        assert response.status_code == 409, response.text  # the commit failed: not a 201
        assert rows(stack, 2) == 0

        assert client.post("/refused/3").status_code == 400
        assert rows(stack, 3) == 0  # an error answer rolls back

        response = client.post("/readonly/4")
        assert response.status_code == 500, response.text  # read-only transaction
        assert rows(stack, 4) == 0

        with app.app_context():
            pools = db.pools
        assert pools.current.leases == 0
        assert pools.current.engine.pool.checkedout() == 0
    finally:
        with app.app_context():
            db.pools.close()


def test_the_control_a_teardown_commit_answers_success_for_what_was_not_kept(
        stack, tmp_path, table):
    """What the extension avoids: committing in teardown_request, after the response was
    made, answers 201 for rows the database refused."""
    app = Flask(__name__)
    url = stack.dsn(via_bouncer=False).replace("postgresql://", "postgresql+psycopg://")
    pools = threaded.Pools(lambda plan: create_engine(url),
                           planfile.PoolPlan(pool_size=1, max_overflow=0))
    sessions: list = []

    @app.post("/pairs/<int:k>")
    def add_pair(k: int):
        lease = pools.lease()
        slot = lease.__enter__()
        session = slot.sessionmaker()
        sessions.append((lease, session))
        session.execute(text(f"INSERT INTO {TABLE} (k) VALUES (:k), (:k)"), {"k": k})
        return jsonify({"added": k}), 201

    @app.teardown_request
    def commit(error):
        lease, session = sessions.pop()
        try:
            session.commit()
        except exc.IntegrityError:
            session.rollback()
        finally:
            session.close()
            lease.__exit__(None, None, None)

    try:
        assert app.test_client().post("/pairs/5").status_code == 201  # a success ...
        assert rows(stack, 5) == 0  # ... that the database did not keep
    finally:
        pools.close()


def test_pool_timeout_is_503_with_retry_after(stack, tmp_path):
    app, db = make_app(stack, tmp_path, pool_size=1, max_overflow=0, pool_timeout=0.2)
    held = threading.Thread(target=lambda: app.test_client().get("/hold"))
    try:
        held.start()
        time.sleep(0.3)  # /hold has the only connection
        response = app.test_client().get("/hold")
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        held.join()
        assert app.test_client().get("/hold").status_code == 200
    finally:
        held.join()
        with app.app_context():
            db.pools.close()
