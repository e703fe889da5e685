"""gunicorn hooks that make `--preload` safe for a sync (threaded) app.

With `--preload` gunicorn imports the app in the master and forks the workers from it: every
object the import built is copied into each worker, a pooled database connection included,
and two processes talking over one socket is the seed's `server closed the connection
unexpectedly` (or, worse, one process reading the other's results). In your gunicorn.conf.py::

    from poolwarden.gunicorn import post_fork, post_worker_init, when_ready  # noqa: F401

* `post_fork` (in the child, right after fork): every plan-following pool of the process
  drops the pools it inherited without touching their connections
  (`Engine.dispose(close=False)`: the parent keeps its own, the child connects anew), and the
  plan watch, a thread that did not survive the fork, starts again in the child.
* `post_worker_init` (in the worker, once the app is loaded, with or without `--preload`):
  starts every plan watch the app asked for.
* `when_ready` (in the master, after a `--preload` import, before the first fork): closes
  the master's idle pooled connections (it serves no request; a connection it kept would sit
  outside the budget, and would be what a worker inherits).

Every engine a `poolwarden.threaded.Pools` builds also carries SQLAlchemy's checkout guard
(`poolwarden.threaded.install_fork_guard`): a pooled connection created in another process
is refused at checkout and replaced, whether or not these hooks run. For an engine of your
own that gunicorn may fork, call `dispose_after_fork(engine)` from `post_fork`, or
`install_fork_guard(engine)` once where you build it.
"""

from __future__ import annotations

from typing import Any

try:
    from sqlalchemy.engine import Engine
except ImportError as error:  # pragma: no cover (the packaging tier checks the message)
    raise ImportError(f"poolwarden.gunicorn needs the sync extra: pip install 'poolwarden[sync]' "
                      f"({error})") from error

from poolwarden import threaded
from poolwarden.threaded import install_fork_guard

__all__ = ["dispose_after_fork", "install_fork_guard", "post_fork", "post_worker_init",
           "when_ready"]


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn hook: in the new worker, no pool of the master's, the plan watch restarted."""
    threaded.after_fork()
    if server is not None:
        server.log.debug("poolwarden: worker %s dropped the pools inherited from the master",
                         getattr(worker, "pid", "?"))


def when_ready(server: Any) -> None:
    """gunicorn hook, in the master: close the pooled connections a --preload import made."""
    threaded.release_all()


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: the app is loaded in this worker; every wanted plan watch runs."""
    threaded.start_watching()


def dispose_after_fork(*engines: Engine) -> None:
    """For engines built outside poolwarden: forget the inherited pool, connections untouched
    (SQLAlchemy: "Using Connection Pools with Multiprocessing or os.fork()")."""
    for engine in engines:
        engine.dispose(close=False)
