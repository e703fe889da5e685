"""gunicorn settings for the app:
`gunicorn -c app/gunicorn.conf.py 'poolwarden_fastapi_app.main:create_app()'`.

Workers are uvicorn workers (the `uvicorn-worker` package). Each worker builds its own engine
in the app's lifespan, so `--preload` is safe. Environment: POOLWARDEN_WORKERS (default 2),
POOLWARDEN_BIND (default 0.0.0.0:8000), PROMETHEUS_MULTIPROC_DIR (created if unset).
"""

import os
import shutil
import tempfile

bind = os.environ.get("POOLWARDEN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("POOLWARDEN_WORKERS", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
graceful_timeout = int(os.environ.get("POOLWARDEN_GRACEFUL_TIMEOUT", "20"))
timeout = 60
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("POOLWARDEN_LOG_LEVEL", "info").lower()
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def on_starting(server):
    """One directory for the workers' Prometheus metrics, emptied at every start."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="poolwarden-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            os.unlink(full)
    server.log.info("prometheus multiprocess dir: %s", path)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(path).startswith("poolwarden-metrics-"):
        shutil.rmtree(path, ignore_errors=True)


# gunicorn >= 24 opens a control socket at a fixed path; several apps on one host would clash.
control_socket_disable = True
