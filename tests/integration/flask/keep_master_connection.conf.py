"""flask-app/gunicorn.conf.py without `when_ready`: the master keeps the pooled connection its
--preload import made when it forks, so the fork-safety test has a connection to inherit."""

import runpy
from pathlib import Path

_conf = runpy.run_path(str(Path(__file__).resolve().parents[3] / "flask-app" / "gunicorn.conf.py"))
globals().update({k: v for k, v in _conf.items()
                  if not k.startswith("__") and k != "when_ready"})
