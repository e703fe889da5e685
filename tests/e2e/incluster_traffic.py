"""Runs inside the cluster (python3 -c): bounded traffic against the app, every answer checked.

argv: BASE_URL RUN_ID THREADS PAUSE_SECONDS MAX_SECONDS MAX_REQUESTS CLIENT_TIMEOUT
Each thread repeats: create an item (POST /items), read it back (GET /items/{id}), run a probe
(GET /probe/{variant}?value=v, whose answer is known), pausing PAUSE_SECONDS between requests.
A fresh connection per request, so every request goes through the Service's current endpoints.
It stops after MAX_SECONDS, after MAX_REQUESTS, or when /tmp/stop exists. One JSON line per
request on stdout: t0, t1 (epoch seconds), op, status (0: no HTTP answer), outcome
(ok | unavailable: a 503 with Retry-After | wrong: any other answer, a wrong body or a 503
without Retry-After | refused: the connection was refused, e.g. by a Service without ready
endpoints | error: no answer: timeout, reset), and for confirmed writes id and name. A last
line {"done": true, ...}. Standard library only.
"""

import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

BASE, RUN = sys.argv[1], sys.argv[2]
THREADS, PAUSE = int(sys.argv[3]), float(sys.argv[4])
MAX_SECONDS, MAX_REQUESTS, TIMEOUT = float(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
URL = urllib.parse.urlsplit(BASE)
LOCK = threading.Lock()
COUNT = {"requests": 0}
DEADLINE = time.time() + MAX_SECONDS


def emit(record):
    with LOCK:
        sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def request(method, path, body=None):
    t0 = time.time()
    status, data, error, retry_after = 0, b"", "", None
    try:
        conn = http.client.HTTPConnection(URL.hostname, URL.port or 80, timeout=TIMEOUT)
        headers = {"Connection": "close"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        status, data = response.status, response.read()
        retry_after = response.getheader("Retry-After")
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        error = type(exc).__name__ + ": " + str(exc)[:200]
    return t0, time.time(), status, data, error, retry_after


def record(op, t0, t1, status, outcome, error="", **extra):
    emit(
        {
            "t0": round(t0, 3),
            "t1": round(t1, 3),
            "op": op,
            "status": status,
            "outcome": outcome,
            **({"error": error} if error else {}),
            **extra,
        }
    )


def classify(status, good, error, retry_after=None):
    if status == 0:
        return "refused" if error.startswith("ConnectionRefusedError") else "error"
    if status == 503:
        return "unavailable" if retry_after else "wrong"
    return "ok" if good else "wrong"


def take():
    with LOCK:
        if COUNT["requests"] >= MAX_REQUESTS:
            return False
        COUNT["requests"] += 1
    return time.time() < DEADLINE and not os.path.exists("/tmp/stop")


def worker(index):
    rnd = random.Random(index)
    n = 0
    while True:
        n += 1
        name = f"{RUN}-{index}-{n}"
        if not take():
            return
        t0, t1, status, data, error, retry = request(
            "POST", "/items", {"name": name, "note": "e2e"}
        )
        item_id = None
        good = False
        if status == 201:
            try:
                item = json.loads(data)
                good = item.get("name") == name and isinstance(item.get("id"), int)
                item_id = item.get("id") if good else None
            except ValueError:
                pass
        outcome = classify(status, good, error, retry)
        extra = {"id": item_id, "name": name} if outcome == "ok" else {"name": name}
        if outcome == "wrong":
            extra["body"] = data[:200].decode("utf-8", "replace")
        record("write", t0, t1, status, outcome, error, **extra)
        time.sleep(PAUSE)
        if item_id is not None:
            if not take():
                return
            t0, t1, status, data, error, retry = request("GET", f"/items/{item_id}")
            good = False
            if status == 200:
                try:
                    item = json.loads(data)
                    good = item.get("id") == item_id and item.get("name") == name
                except ValueError:
                    pass
            outcome = classify(status, good, error, retry)
            extra = {"id": item_id}
            if outcome == "wrong":
                extra["body"] = data[:200].decode("utf-8", "replace")
            record("read", t0, t1, status, outcome, error, **extra)
            time.sleep(PAUSE)
        if not take():
            return
        variant, value = rnd.randrange(1000), rnd.randrange(-(10**6), 10**6)
        t0, t1, status, data, error, retry = request("GET", f"/probe/{variant}?value={value}")
        good = False
        if status == 200:
            try:
                good = json.loads(data).get("answer") == value * (variant + 1) + variant
            except ValueError:
                pass
        outcome = classify(status, good, error, retry)
        extra = {"body": data[:200].decode("utf-8", "replace")} if outcome == "wrong" else {}
        record("probe", t0, t1, status, outcome, error, **extra)
        time.sleep(PAUSE)


def main():
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    emit({"done": True, "requests": COUNT["requests"]})


main()
