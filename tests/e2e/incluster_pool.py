"""Runs inside the cluster (python3 -c): every gunicorn worker's /pool of the given app pods.

argv: WORKERS POD_IP... Each pod is asked with a fresh connection until WORKERS distinct
worker pids answered (the kernel hands new connections to whichever worker accepts), or 80
tries. Prints one JSON object: {pod_ip: {pid: /pool answer}}. Standard library only.
"""

import http.client
import json
import sys
import threading


def ask(ip, workers, out):
    seen = {}
    for _ in range(80):
        try:
            conn = http.client.HTTPConnection(ip, 8000, timeout=5)
            conn.request("GET", "/pool", headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200:
                status = json.loads(body)
                seen[str(status["pid"])] = status
        except (OSError, ValueError, http.client.HTTPException):
            pass
        if len(seen) >= workers:
            break
    out[ip] = seen


def main():
    workers = int(sys.argv[1])
    out = {}
    threads = [threading.Thread(target=ask, args=(ip, workers, out)) for ip in sys.argv[2:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sys.stdout.write(json.dumps(out) + "\n")


main()
