"""Runs inside the cluster (python3 -c): many users of the app, each waiting on a slow request.

argv: BASE_URL USERS SLEEP_SECONDS MAX_SECONDS CLIENT_TIMEOUT
USERS threads, each looping `GET /probe/<n>?value=<v>&sleep=SLEEP_SECONDS` (a transaction that
holds a server connection for SLEEP_SECONDS; the answer is known) with no pause, on a fresh
connection per request, so every request goes through the Service's current endpoints. It
stops after MAX_SECONDS or when /tmp/stop exists. One JSON line per second on stdout, for the
requests that ended in that second: t (epoch seconds), ok, unavailable (503 with Retry-After),
wrong (any other answer, a wrong body, a 503 without Retry-After: {status: count}), errors (no
answer: {message: count}), busy (users waiting for an answer at that instant), latency
(p50, p99, max seconds of the requests that ended, answered or not); a few examples of each
failure; a last line {"done": true, ...} with the totals. Standard library only.
"""

import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

BASE = urllib.parse.urlsplit(sys.argv[1])
USERS, SLEEP = int(sys.argv[2]), float(sys.argv[3])
MAX_SECONDS, TIMEOUT = float(sys.argv[4]), float(sys.argv[5])
DEADLINE = time.time() + MAX_SECONDS
LOCK = threading.Lock()
EXAMPLES_PER_SECOND = 3


def fresh():
    return {"ok": 0, "unavailable": 0, "wrong": {}, "errors": {}, "latencies": [], "examples": []}


STATE = {"second": fresh(), "busy": 0}
TOTAL = {"requests": 0, "ok": 0, "unavailable": 0, "wrong": 0, "errors": 0}


def running():
    return time.time() < DEADLINE and not os.path.exists("/tmp/stop")


def count(outcome, latency, key=None, example=None):
    with LOCK:
        second = STATE["second"]
        second["latencies"].append(latency)
        TOTAL["requests"] += 1
        TOTAL[outcome] += 1
        if outcome in ("ok", "unavailable"):
            second[outcome] += 1
        else:
            second[outcome][key] = second[outcome].get(key, 0) + 1
        if example is not None and len(second["examples"]) < EXAMPLES_PER_SECOND:
            second["examples"].append(example)


def one_request(rnd):
    variant, value = rnd.randrange(1000), rnd.randrange(-(10**6), 10**6)
    path = f"/probe/{variant}?value={value}&sleep={SLEEP}"
    t0 = time.time()
    try:
        conn = http.client.HTTPConnection(BASE.hostname, BASE.port or 80, timeout=TIMEOUT)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            status, data = response.status, response.read()
            retry_after = response.getheader("Retry-After")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as error:
        message = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        count("errors", time.time() - t0, message, {"path": path, "error": message})
        return
    latency = time.time() - t0
    if status == 503 and retry_after:
        body = data[:200].decode("utf-8", "replace")
        count("unavailable", latency, example={"path": path, "status": 503, "body": body})
        return
    good = False
    if status == 200:
        try:
            good = json.loads(data).get("answer") == value * (variant + 1) + variant
        except ValueError:
            pass
    if good:
        count("ok", latency)
    else:
        body = data[:200].decode("utf-8", "replace")
        count("wrong", latency, str(status), {"path": path, "status": status, "body": body})


def user(index):
    rnd = random.Random(index)
    time.sleep(rnd.uniform(0, 3))  # ramp up over 3 s
    while running():
        with LOCK:
            STATE["busy"] += 1
        try:
            one_request(rnd)
        finally:
            with LOCK:
                STATE["busy"] -= 1


def quantile(values, q):
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def report(done):
    while not done.is_set():
        time.sleep(1.0 - time.time() % 1.0)
        with LOCK:
            second, STATE["second"] = STATE["second"], fresh()
            busy = STATE["busy"]
        latencies = second.pop("latencies")
        line = {
            "t": round(time.time(), 3),
            **second,
            "busy": busy,
            "latency": {
                "p50": quantile(latencies, 0.5),
                "p99": quantile(latencies, 0.99),
                "max": round(max(latencies, default=0.0), 3),
            },
        }
        if not line["examples"]:
            del line["examples"]
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def main():
    done = threading.Event()
    reporter = threading.Thread(target=report, args=(done,), daemon=True)
    reporter.start()
    users = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(USERS)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    done.set()
    time.sleep(1.1)  # the reporter's last full second
    sys.stdout.write(json.dumps({"done": True, **TOTAL}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


main()
