"""The Prometheus multiprocess directory of a gunicorn pod (pure: no third-party import).

prometheus-client picks its multiprocess mode when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``; with ``--preload`` the app (and prometheus-client) is imported
in the master before any server hook runs. So a gunicorn config calls `prepare()` at import,
first thing, then `poolwarden.metrics.mark_process_dead` from ``child_exit`` and `remove` from
``on_exit``::

    from poolwarden import multiproc
    multiproc.prepare()
    def child_exit(server, worker):
        from poolwarden import metrics  # prometheus-client: imported after prepare()
        metrics.mark_process_dead(worker.pid)
    def on_exit(server): multiproc.remove()
"""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "poolwarden-metrics-"
"""A directory made here (none was given) is named so; `remove` deletes only such a one."""


def prepare() -> str:
    """The directory named by PROMETHEUS_MULTIPROC_DIR (made, or a new temporary one when
    unset), emptied of a previous run's files: the workers' metrics start from nothing."""
    path = os.environ.get(ENV)
    if not path:
        path = tempfile.mkdtemp(prefix=PREFIX)
        os.environ[ENV] = path
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            os.unlink(full)
    return path


def remove() -> None:
    """Delete the directory `prepare` made; one the user named stays."""
    path = os.environ.get(ENV, "")
    if os.path.basename(path).startswith(PREFIX):
        shutil.rmtree(path, ignore_errors=True)
