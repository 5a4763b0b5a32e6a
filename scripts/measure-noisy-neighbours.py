#!/usr/bin/env python3
"""A bystander's latency next to spinning sessions, over HTTP against a running sandbox service (issue #14, item 6).

    rlm sandbox serve --port 8765 &                      # default settings
    scripts/measure-noisy-neighbours.py http://127.0.0.1:8765 [SPINNERS] [CELL_TIMEOUT] [SAMPLES]

SPINNERS sessions (default 4) each run `while True: pass` at their cell limit (CELL_TIMEOUT seconds, default 10),
over and over, while one bystander session runs SAMPLES (default 40) trivial cells (`1 + 1`) one after another. Prints
the bystander's latency percentiles, and the same bystander's latency with nobody spinning, measured in the same run.
Standard library only; sends `X-Session-Secret` when the service returns a session secret.
"""

import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request


def call(base, method, path, body=None, secret=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if secret:
        request.add_header("X-Session-Secret", secret)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
        return json.loads(text) if text else None


def new_session(base, cell_timeout):
    created = call(base, "POST", "/v1/sessions", {"context": "", "cell_timeout": cell_timeout})
    return created["session_id"], created.get("session_secret")


def run_cell(base, session, code):
    session_id, secret = session
    return call(base, "POST", f"/v1/sessions/{session_id}/cells", {"code": code}, secret)


def bystander_latencies(base, session, samples):
    latencies = []
    origin = time.monotonic()
    for _ in range(samples):
        started = time.monotonic()
        reply = run_cell(base, session, "1 + 1")
        latencies.append(time.monotonic() - started)
        if latencies[-1] > 1 and "-v" in sys.argv:
            print(f"  slow sample at +{started - origin:.1f} s: {latencies[-1]:.2f} s", file=sys.stderr)
        assert reply["status"] == "done" and reply["outcome"]["stdout"] == "2\n", reply
    return latencies


def describe(latencies):
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def main():
    base = sys.argv[1].rstrip("/")
    spinners = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    cell_timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    samples = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    bystander = new_session(base, 30)
    quiet = bystander_latencies(base, bystander, samples)
    stop = threading.Event()

    def spin():
        session = new_session(base, cell_timeout)
        while not stop.is_set():
            try:
                run_cell(base, session, "while True: pass")
            except urllib.error.HTTPError as err:
                if err.code != 410:
                    raise
                # A session whose cells keep failing is closed by the sandbox: start another.
                session = new_session(base, cell_timeout)

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(spinners)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    busy = bystander_latencies(base, bystander, samples)
    stop.set()
    print(f"bystander alone:            {describe(quiet)}")
    print(f"bystander next to {spinners} spinners: {describe(busy)}")


if __name__ == "__main__":
    main()
