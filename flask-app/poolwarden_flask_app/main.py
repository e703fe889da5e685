"""The WSGI application factory: `gunicorn -c flask-app/gunicorn.conf.py
'poolwarden_flask_app.main:create_app()'`.

With `--preload` (on in gunicorn.conf.py) this runs in the gunicorn master, before the
workers are forked: it builds the plan-following pool and, when the database answers,
creates the schema, so the master holds a pooled connection (the seed's situation).
poolwarden.gunicorn's `when_ready` closes it before the first fork; and were one kept, no
worker would use it: the at-fork reset and `post_fork` drop the inherited pool untouched,
and the checkout guard refuses a connection made by another process.
"""

from __future__ import annotations

import logging

from flask import Flask

from poolwarden_flask_app import config, db, routes
from poolwarden_flask_app.extensions import Runtime, pw

log = logging.getLogger("poolwarden_flask_app")


def create_app(settings: config.Settings | None = None) -> Flask:
    s = settings or config.Settings()
    logging.basicConfig(level=s.log_level.upper(),
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    app = Flask("poolwarden_flask_app")
    app.json.ensure_ascii = True  # type: ignore[attr-defined]
    pools = pw.init_app(app, engine_factory=lambda plan: db.build_engine(s, plan),
                        plan_file=s.plan_file, pool_size=s.pool_size,
                        max_overflow=s.max_overflow, poll=s.plan_poll,
                        retry_after=s.retry_after_seconds)
    schema = db.Schema(pools, enabled=s.create_schema)
    rt = Runtime(settings=s, pools=pools, schema=schema)
    app.extensions["poolwarden_flask_app"] = rt
    pools.observer = rt  # every worker publishes the plan it applies (the operator's Applied)
    routes.install_error_handlers(app)
    app.register_blueprint(routes.bp)
    schema.ensure()  # an unreachable database only leaves the workers unready for now
    log.info("app ready to fork or serve: %s", pools.status())
    return app
