"""What a worker reports about its pool (`/pool`, metrics): pure, for any SQLAlchemy pool.

The pool is duck-typed: a QueuePool has ``checkedin()``, ``checkedout()`` and ``overflow()``;
a pool without them (NullPool) reports zeros. Both plan-following engines and every
integration (FastAPI, Flask) answer with the same dict, so a dashboard reads one shape.
"""

from __future__ import annotations

import os
from typing import Any

from poolwarden import planfile


def pool_status(plan: planfile.PoolPlan, pool: Any, *, swaps: int,
                retired_open: int) -> dict[str, object]:
    """This process's pool: the plan it follows and how its connections are used right now.

    ``retired_open`` counts replaced pools whose connections are not all closed yet.
    """
    stats = {"checked_in": 0, "checked_out": 0, "overflow": 0}
    if hasattr(pool, "checkedout"):
        stats = {"checked_in": pool.checkedin(), "checked_out": pool.checkedout(),
                 "overflow": max(pool.overflow(), 0)}
    return {
        "pid": os.getpid(),
        "generation": plan.generation,
        "pool_size": plan.pool_size,
        "max_overflow": plan.max_overflow,
        **stats,
        "overcommitted": plan.overcommitted,
        "budget": plan.budget,
        "consumer": plan.consumer,
        "swaps": swaps,
        "retired_pools_open": retired_open,
    }
