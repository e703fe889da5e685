"""gunicorn settings for the Flask service:
`gunicorn -c flask-app/gunicorn.conf.py 'poolwarden_flask_app.main:create_app()'`.

Threaded workers (gthread): POOLWARDEN_WORKERS processes (default 2) x POOLWARDEN_THREADS
threads (default 4). `--preload` is on (POOLWARDEN_PRELOAD=false turns it off): the app is
imported once in the master, and poolwarden's hooks make that safe (the master closes the
connection it made, none crosses fork, the plan watch runs in each worker).
POOLWARDEN_BIND (default 0.0.0.0:8000), PROMETHEUS_MULTIPROC_DIR (created if unset).
"""

import os
import shutil
import tempfile

from poolwarden.gunicorn import post_fork, post_worker_init, when_ready  # noqa: F401  (hooks)

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


# The workers' Prometheus metrics directory, emptied at every start. Set here, not in
# on_starting: with --preload the app (and prometheus_client) is imported before that hook.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not _metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="poolwarden-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
os.makedirs(_metrics_dir, exist_ok=True)
for _name in os.listdir(_metrics_dir):
    if os.path.isfile(os.path.join(_metrics_dir, _name)):
        os.unlink(os.path.join(_metrics_dir, _name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(path).startswith("poolwarden-metrics-"):
        shutil.rmtree(path, ignore_errors=True)
