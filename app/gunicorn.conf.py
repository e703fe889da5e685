"""gunicorn settings for the app:
`gunicorn -c app/gunicorn.conf.py 'poolwarden_fastapi_app.main:create_app()'`.

Workers are uvicorn workers (the `uvicorn-worker` package). Each worker builds its own engine
in the app's lifespan, so `--preload` is safe. Environment: POOLWARDEN_WORKERS (default 2),
POOLWARDEN_BIND (default 0.0.0.0:8000), PROMETHEUS_MULTIPROC_DIR (created if unset).
"""

import os

from poolwarden import multiproc

# The workers' Prometheus metrics directory, emptied at every start, before the app (and
# prometheus-client, which reads it once) is imported.
multiproc.prepare()

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


def child_exit(server, worker):
    from poolwarden import metrics  # prometheus-client: imported only after prepare()

    metrics.mark_process_dead(worker.pid)


def on_exit(server):
    multiproc.remove()


# gunicorn >= 24 opens a control socket at a fixed path; several apps on one host would clash.
control_socket_disable = True
