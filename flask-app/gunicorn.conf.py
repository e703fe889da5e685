"""gunicorn settings for the Flask service:
`gunicorn -c flask-app/gunicorn.conf.py 'poolwarden_flask_app.main:create_app()'`.

Threaded workers (gthread): POOLWARDEN_WORKERS processes (default 2) x POOLWARDEN_THREADS
threads (default 4). `--preload` is on (POOLWARDEN_PRELOAD=false turns it off): the app is
imported once in the master, and poolwarden's hooks make that safe (the master closes the
connection it made, none crosses fork, the plan watch runs in each worker).
POOLWARDEN_BIND (default 0.0.0.0:8000), PROMETHEUS_MULTIPROC_DIR (created if unset).
"""

import os

from poolwarden import multiproc
from poolwarden.gunicorn import post_fork, post_worker_init, when_ready  # noqa: F401  (hooks)

# The workers' Prometheus metrics directory, emptied at every start. Here, not in on_starting:
# with --preload the app (and prometheus-client, which reads it once) is imported before it.
multiproc.prepare()

bind = os.environ.get("POOLWARDEN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("POOLWARDEN_WORKERS", "2"))
threads = int(os.environ.get("POOLWARDEN_THREADS", "4"))
worker_class = "gthread"
preload_app = os.environ.get("POOLWARDEN_PRELOAD", "true").lower() not in ("false", "0", "no")
graceful_timeout = int(os.environ.get("POOLWARDEN_GRACEFUL_TIMEOUT", "20"))
timeout = 60
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("POOLWARDEN_LOG_LEVEL", "info").lower()
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn >= 24 opens a control socket at a fixed path; several apps on one host would clash.
control_socket_disable = True


def child_exit(server, worker):
    from poolwarden import metrics  # prometheus-client: imported only after prepare()

    metrics.mark_process_dead(worker.pid)


def on_exit(server):
    multiproc.remove()
