"""Flask: a plan-following pool, a session per request, a read-only session, `/pool`.

::

    from flask import Flask
    from poolwarden.flask import PoolWarden

    db = PoolWarden()

    def create_app():
        app = Flask(__name__)
        db.init_app(app, url="postgresql+psycopg://app:secret@pgbouncer:6432/app",
                    status_path="/pool")
        return app

    @app.get("/items/<int:item_id>")
    def read_item(item_id):
        return db.readonly_session.get(Item, item_id) ...

`db.session` is this request's session, taken (with a lease on the current engine) at first
use. It is committed before the response is sent when the response is a success (status <
400), rolled back otherwise; a failed commit is an error response (the app's handler for the
exception, else 500), never a success the database did not keep. `db.readonly_session` runs
in a READ ONLY transaction and is always rolled back. Both are closed and their lease ends
when the request ends, whatever happened.

The pool follows the plan file (`poolwarden.threaded.PlanFollowingEngine`; its watch thread
starts at the first request of each process, so `gunicorn --preload` runs none in the master;
`poolwarden.gunicorn`'s hooks start it in each worker at once). With `errors=True` (the
default) a pool timeout or an unavailable database answers 503 + Retry-After, not 500.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from flask import Flask, current_app, g, jsonify
    from sqlalchemy import create_engine, exc, text
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session
except ImportError as error:  # pragma: no cover (the packaging tier checks the message)
    raise ImportError(f"poolwarden.flask needs the flask extra: pip install 'poolwarden[flask]' "
                      f"({error})") from error

from poolwarden import planfile, threaded

log = logging.getLogger("poolwarden.flask")

EXTENSION = "poolwarden"
DEFAULT_PLAN_FILE = "/etc/poolwarden/plan/plan.json"
UNAVAILABLE_SQLSTATES = ("08", "53", "57P")
"""SQLSTATE classes that mean "not now": connection exceptions, insufficient resources (the
role's CONNECTION LIMIT), operator intervention (shutdown)."""


def unavailable(error: exc.DBAPIError) -> bool:
    """True when the database could not serve now (a 503 + Retry-After, not a 500)."""
    if error.connection_invalidated or isinstance(error, exc.OperationalError | exc.InterfaceError):
        return True
    code = getattr(error.orig, "sqlstate", None)
    return isinstance(code, str) and code.startswith(UNAVAILABLE_SQLSTATES)


@dataclasses.dataclass
class _Held:
    """One session of one request and the lease that keeps its engine alive."""

    lease: Any
    session: Session
    readonly: bool

    def end(self, *, commit: bool) -> None:
        """Commit (or roll back), then always close the session and end the lease."""
        try:
            if commit:
                self.session.commit()
            else:
                self.session.rollback()
        except BaseException:
            try:
                self.session.rollback()
            finally:
                self._release()
            raise
        self._release()

    def _release(self) -> None:
        try:
            self.session.close()
        finally:
            self.lease.__exit__(None, None, None)


class PoolWarden:
    """The Flask extension (`init_app` pattern; one instance may serve several apps)."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        if app is not None:
            self.init_app(app, **options)

    def init_app(self, app: Flask, *, url: str | None = None,
                 engine_factory: Callable[[planfile.PoolPlan], Engine] | None = None,
                 plan_file: str | Path | None = None, pool_size: int = 5, max_overflow: int = 0,
                 poll: bool = False, status_path: str | None = None, errors: bool = True,
                 retry_after: int = 1, pools: threaded.Pools | None = None,
                 **engine_options: Any) -> threaded.Pools:
        """Attach a plan-following pool to `app`.

        Either `url` (engines are `create_engine(url, pool_size=plan.pool_size,
        max_overflow=plan.max_overflow, pool_pre_ping=True, **engine_options)`), or your own
        `engine_factory(plan)`, or ready-made `pools`. The plan file defaults to
        $POOLWARDEN_PLAN_FILE, else /etc/poolwarden/plan/plan.json; until it exists the pool
        has `pool_size` / `max_overflow`.
        """
        if pools is None:
            if engine_factory is None:
                if url is None:
                    raise ValueError("PoolWarden.init_app needs url=, engine_factory= or pools=")
                engine_factory = url_engine_factory(url, **engine_options)
            path = plan_file or os.environ.get("POOLWARDEN_PLAN_FILE") or DEFAULT_PLAN_FILE
            pools = threaded.PlanFollowingEngine(
                engine_factory, Path(path),
                planfile.PoolPlan(pool_size=pool_size, max_overflow=max_overflow),
                poll=poll, lazy=True)
        app.extensions[EXTENSION] = pools
        if isinstance(pools, threaded.PlanFollowingEngine):
            app.before_request(pools.ensure_watching)
        app.after_request(self._after_request)
        app.teardown_request(self._teardown_request)
        if status_path:
            app.add_url_rule(status_path, "poolwarden_status",
                             lambda: jsonify(self.status()), methods=["GET"])
        if errors:
            self._install_error_handlers(app, retry_after)
        return pools

    # -- what views use ---------------------------------------------------------------------
    @property
    def pools(self) -> threaded.Pools:
        return current_app.extensions[EXTENSION]

    @property
    def session(self) -> Session:
        """This request's session (committed when the response is a success)."""
        return self._held(readonly=False).session

    @property
    def readonly_session(self) -> Session:
        """This request's read-only session (READ ONLY transaction, always rolled back)."""
        return self._held(readonly=True).session

    def status(self) -> dict[str, object]:
        """The `/pool` dict of this process (poolwarden.poolstatus)."""
        return self.pools.status()

    # -- the request's sessions -------------------------------------------------------------
    @staticmethod
    def _key(readonly: bool) -> str:
        return "_poolwarden_readonly" if readonly else "_poolwarden_session"

    def _held(self, *, readonly: bool) -> _Held:
        key = self._key(readonly)
        held = g.get(key)
        if held is None:
            lease = self.pools.lease()
            slot = lease.__enter__()
            try:
                session = slot.sessionmaker()
                try:
                    if readonly:
                        session.execute(text("SET TRANSACTION READ ONLY"))
                    else:
                        session.connection()  # take the pooled connection now (pool_timeout)
                except BaseException:
                    session.close()
                    raise
            except BaseException:
                lease.__exit__(None, None, None)
                raise
            held = _Held(lease=lease, session=session, readonly=readonly)
            setattr(g, key, held)
        return held

    def _after_request(self, response: Any) -> Any:
        """Before the response is sent: commit a success, roll back the rest. A commit that
        fails becomes the app's error response for that exception (else a 500)."""
        failure: BaseException | None = None
        for readonly in (True, False):
            held = g.pop(self._key(readonly), None)
            if held is None:
                continue
            try:
                held.end(commit=not readonly and response.status_code < 400)
            except Exception as error:  # noqa: BLE001  (answered below, not swallowed)
                log.warning("commit failed, the request gets an error response: %s", error)
                failure = failure or error
        if failure is not None:
            return current_app.make_response(current_app.handle_user_exception(failure))
        return response

    def _teardown_request(self, error: BaseException | None) -> None:
        """Whatever happened (after_request not reached): roll back, close, end the lease."""
        for readonly in (True, False):
            held = g.pop(self._key(readonly), None)
            if held is not None:
                try:
                    held.end(commit=False)
                except Exception:  # noqa: BLE001  (the response is gone; the lease is ended)
                    log.exception("rollback at teardown failed")

    # -- failures as answers ----------------------------------------------------------------
    @staticmethod
    def _install_error_handlers(app: Flask, retry_after: int) -> None:
        def busy(detail: str) -> Any:
            response = jsonify({"detail": detail})
            response.status_code = 503
            response.headers["Retry-After"] = str(retry_after)
            return response

        @app.errorhandler(exc.TimeoutError)
        def _pool_exhausted(error: exc.TimeoutError) -> Any:
            return busy("database pool exhausted, retry shortly")

        @app.errorhandler(exc.DBAPIError)
        def _database_error(error: exc.DBAPIError) -> Any:
            if unavailable(error):
                log.warning("database unavailable: %s", error.orig)
                return busy("database unavailable, retry shortly")
            log.error("database error: %s", error.orig)
            response = jsonify({"detail": "database error"})
            response.status_code = 500
            return response


def url_engine_factory(url: str, **engine_options: Any) -> Callable[[planfile.PoolPlan], Engine]:
    """`factory(plan)`: a sync engine on `url` whose pool has the plan's size."""
    options = {"pool_pre_ping": True, "pool_use_lifo": True, **engine_options}

    def build(plan: planfile.PoolPlan) -> Engine:
        return create_engine(url, pool_size=plan.pool_size, max_overflow=plan.max_overflow,
                             **options)

    return build
