"""Runs inside the cluster (python3 -c, app image): many database clients through PgBouncer.

argv: HOST PORT CLIENTS SLEEP_SECONDS MAX_SECONDS LIFETIME_SECONDS
env: PGUSER, PGDATABASE, PGPASSWORD (the consumers' role, as PgBouncer's Deployment names it).
CLIENTS asyncpg connections, each looping `SELECT pg_sleep(SLEEP_SECONDS)` (simple protocol, no
prepared statement). Each client closes its connection and opens a new one through the Service
after a random lifetime of 0.5 to 1.5 x LIFETIME_SECONDS, so the load spreads over the PgBouncer
pods as they come and go; after any error it reconnects half a second later. It stops after
MAX_SECONDS or when /tmp/stop exists. One JSON line per second on stdout: t (epoch seconds),
ok (queries answered in that second), open (connected clients), errors ({message: count} of
that second); a last line {"done": true, "ok": ..., "errors": {...}}.
"""

import asyncio
import json
import os
import random
import sys
import time

import asyncpg

HOST, PORT = sys.argv[1], int(sys.argv[2])
CLIENTS, SLEEP = int(sys.argv[3]), float(sys.argv[4])
MAX_SECONDS, LIFETIME = float(sys.argv[5]), float(sys.argv[6])
DEADLINE = time.time() + MAX_SECONDS
QUERY = f"SELECT pg_sleep({SLEEP})"
STATE = {"ok": 0, "open": 0, "errors": {}}
TOTAL = {"ok": 0, "errors": {}}


def running():
    return time.time() < DEADLINE and not os.path.exists("/tmp/stop")


def failed(error):
    text = " ".join(f"{type(error).__name__}: {error}".split())[:200]
    for bucket in (STATE["errors"], TOTAL["errors"]):
        bucket[text] = bucket.get(text, 0) + 1


async def client(index):
    rnd = random.Random(index)
    await asyncio.sleep(rnd.uniform(0, 3))  # ramp up over 3 s
    while running():
        conn = None
        try:
            conn = await asyncpg.connect(host=HOST, port=PORT, timeout=10, statement_cache_size=0)
            STATE["open"] += 1
            try:
                until = time.time() + LIFETIME * rnd.uniform(0.5, 1.5)
                while running() and time.time() < until:
                    await conn.execute(QUERY, timeout=60)
                    STATE["ok"] += 1
                    TOTAL["ok"] += 1
            finally:
                STATE["open"] -= 1
        except Exception as error:  # every failure is counted and the client carries on
            failed(error)
            await asyncio.sleep(0.5)
        finally:
            if conn is not None:
                try:
                    await asyncio.wait_for(conn.close(), 5)
                except Exception:
                    conn.terminate()


async def report():
    while True:
        await asyncio.sleep(1.0 - time.time() % 1.0)
        line = {"t": round(time.time(), 3), "ok": STATE["ok"], "open": STATE["open"]}
        line["errors"] = STATE["errors"]
        STATE["ok"], STATE["errors"] = 0, {}
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()


async def main():
    reporter = asyncio.create_task(report())
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    reporter.cancel()
    sys.stdout.write(json.dumps({"done": True, **TOTAL}, separators=(",", ":")) + "\n")


asyncio.run(main())
