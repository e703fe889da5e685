"""Side-by-side benchmark of the data path: the same app, three ways to reach PostgreSQL.

    (a) app -> PgBouncer (transaction mode) -> PostgreSQL   SQLAlchemy pool per worker
    (b) app -> PostgreSQL                                   SQLAlchemy pool per worker
    (c) app -> PostgreSQL, NullPool                         a new connection per request

One stack (PostgreSQL 17 + PgBouncer 1.24 from the trixie root), three gunicorn apps with the
same worker count, the same request mix (/probe: one read-only transaction, 20 distinct
statements), measured in interleaved rounds so that background load hits all three alike.
Writes bench/out/results.md, results.json and results.png. Bounded: about 1-2 minutes.

    python bench/run.py [--seconds 4] [--rounds 4] [--concurrency 24] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "devstack"))
import devstack  # noqa: E402

OUT = REPO / "bench" / "out"
SETUPS = {
    "a": ("app -> PgBouncer -> PostgreSQL", {"via_bouncer": True}, {}),
    "b": ("app -> PostgreSQL (SQLAlchemy pool)", {"via_bouncer": False}, {}),
    "c": ("app -> PostgreSQL (NullPool)", {"via_bouncer": False},
          {"POOLWARDEN_POOL_CLASS": "null"}),
}


async def measure(url: str, *, seconds: float, concurrency: int) -> tuple[int, int, list[float]]:
    """Requests for `seconds` from `concurrency` loops: (ok, failed, latencies)."""
    latencies: list[float] = []
    failed = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def loop(n: int) -> None:
            nonlocal failed
            i = 0
            while time.monotonic() < deadline:
                i += 1
                started = time.perf_counter()
                response = await client.get(f"/probe/{n % 20}", params={"value": i})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failed += 1

        await asyncio.gather(*(loop(n) for n in range(concurrency)))
    return len(latencies), failed, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize(per_setup: dict[str, dict], seconds_total: float) -> dict[str, dict]:
    results = {}
    for key, data in per_setup.items():
        lat = data["latencies"]
        results[key] = {
            "setup": SETUPS[key][0],
            "requests": data["ok"],
            "failed": data["failed"],
            "rps": data["ok"] / seconds_total,
            "p50_ms": percentile(lat, 0.50) * 1000,
            "p99_ms": percentile(lat, 0.99) * 1000,
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
        }
    base = results["a"]
    for r in results.values():
        r["rps_vs_a"] = r["rps"] / base["rps"]
        r["p50_vs_a"] = r["p50_ms"] / base["p50_ms"]
        r["p99_vs_a"] = r["p99_ms"] / base["p99_ms"]
    return results


def write_markdown(results: dict[str, dict], args: argparse.Namespace,
                   load: tuple[float, float]) -> str:
    lines = [
        f"Each setup: {args.workers} gunicorn workers, pool_size 5 per worker (not NullPool), "
        f"{args.concurrency} concurrent HTTP clients, {args.rounds} interleaved rounds of "
        f"{args.seconds:.0f} s; request = one read-only transaction (`/probe`). "
        f"Load average {load[0]:.1f} at the start, {load[1]:.1f} at the end, on "
        f"{os.cpu_count()} CPUs shared with the load generator: compare the ratios, not the "
        "absolute figures.",
        "",
        "| setup | req/s | p50 ms | p99 ms | req/s vs (a) | p50 vs (a) | p99 vs (a) | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in results.items():
        lines.append(f"| ({key}) {r['setup']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['rps_vs_a']:.2f}x | {r['p50_vs_a']:.2f}x | "
                     f"{r['p99_vs_a']:.2f}x | {r['failed']} |")
    return "\n".join(lines) + "\n"


def write_plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labels = [f"({k}) {r['setup']}".replace(" -> ", "\n-> ") for k, r in results.items()]
    fig, (ax1, ax2) = pyplot.subplots(1, 2, figsize=(11, 4.5))
    ax1.bar(labels, [r["rps"] for r in results.values()], color=["#4c72b0", "#55a868", "#c44e52"])
    ax1.set_title("throughput (req/s, higher is better)")
    x = range(len(labels))
    ax2.bar([i - 0.2 for i in x], [r["p50_ms"] for r in results.values()], width=0.4, label="p50")
    ax2.bar([i + 0.2 for i in x], [r["p99_ms"] for r in results.values()], width=0.4, label="p99")
    ax2.set_xticks(list(x), labels)
    ax2.set_title("latency (ms, lower is better)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("poolwarden data path: same app, three ways to PostgreSQL")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    state_root = REPO / ".state"
    state_root.mkdir(exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="bench-", dir=state_root))
    stack = devstack.Stack(state=state, pg_port=devstack.free_port(),
                           bouncer_port=devstack.free_port(), app_port=devstack.free_port())
    per_setup = {key: {"ok": 0, "failed": 0, "latencies": []} for key in SETUPS}
    load_start = os.getloadavg()[0]
    try:
        stack.start_postgres(max_connections=100)
        stack.start_pgbouncer(PGBOUNCER_DEFAULT_POOL_SIZE="10",
                              PGBOUNCER_MAX_DB_CONNECTIONS="20")
        urls = {}
        for key, (_, kwargs, env) in SETUPS.items():
            port = devstack.free_port()
            stack.start_app(workers=args.workers, port=port, name=f"bench-{key}",
                            POOLWARDEN_INSTANCE=f"bench-{key}", POOLWARDEN_POOL_SIZE="5",
                            POOLWARDEN_POOL_TIMEOUT="30", POOLWARDEN_SLOW_QUERY_SECONDS="0",
                            **env, **kwargs)
            urls[key] = f"http://127.0.0.1:{port}"
        for url in urls.values():  # warm-up: pools filled, code paths loaded
            asyncio.run(measure(url, seconds=1.0, concurrency=args.concurrency))
        for round_number in range(args.rounds):
            for key, url in urls.items():
                devstack.log(f"round {round_number + 1}/{args.rounds}: ({key}) {SETUPS[key][0]}")
                ok, failed, latencies = asyncio.run(
                    measure(url, seconds=args.seconds, concurrency=args.concurrency))
                per_setup[key]["ok"] += ok
                per_setup[key]["failed"] += failed
                per_setup[key]["latencies"] += latencies
    finally:
        devstack.stop(stack)
        shutil.rmtree(state, ignore_errors=True)  # the benchmark's own throwaway cluster

    results = summarize(per_setup, args.seconds * args.rounds)
    markdown = write_markdown(results, args, (load_start, os.getloadavg()[0]))
    (OUT / "results.md").write_text(markdown)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_plot(results, OUT / "results.png")
    sys.stdout.write(markdown)
    sys.stdout.write(f"\n>> bench: wrote {OUT}/results.md, results.json, results.png\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
