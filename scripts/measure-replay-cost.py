#!/usr/bin/env python3
"""Replay amplification (issue #14, item 8), against a running sandbox service:

    rlm sandbox serve --port 8770 &
    scripts/measure-replay-cost.py http://127.0.0.1:8770

Six busy 2.5 s cells under a 3 s cell limit, then a cell that spins into the limit, twice: prints how long each
trapped cell took to answer (the limit plus replaying earlier cells) and which variables survived. Standard library
only; sends X-Session-Secret when the service returns one."""

import json
import sys
import time
import urllib.request

base = sys.argv[1].rstrip("/")


def call(method, path, body=None, secret=None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(), method=method)
    req.add_header("Content-Type", "application/json")
    if secret: req.add_header("X-Session-Secret", secret)
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"null")
s = call("POST", "/v1/sessions", {"context": "", "cell_timeout": 3})
sid, secret = s["session_id"], s.get("session_secret")
busy = "import time\nt = time.time()\nwhile time.time() - t < 2.5: pass\n"
for i in range(6):
    call("POST", f"/v1/sessions/{sid}/cells", {"code": busy + f"v{i} = {i}"}, secret)
for attempt in range(2):
    started = time.monotonic()
    r = call("POST", f"/v1/sessions/{sid}/cells", {"code": "while True: pass"}, secret)
    print(f"trap {attempt + 1}: answered after {time.monotonic() - started:.1f} s: {r['outcome']['error']['message'][:160]}")
    r = call("POST", f"/v1/sessions/{sid}/cells", {"code": "print([n for n in ('v0','v5') if n in globals()])"}, secret)
    print("   variables left:", r["outcome"]["stdout"].strip())
