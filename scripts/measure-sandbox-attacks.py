#!/usr/bin/env python3
"""Runs the sandbox trust-boundary attacks of issue #14 against an `rlm` binary, from outside the process.

    scripts/measure-sandbox-attacks.py [RLM_BINARY]        (default: target/release/rlm)

Each attack is one `rlm exec --executor wasm --timeout 3` process; the script reports its wall time, the peak RSS of
the whole process (guest memory included: the guest may use up to its 1 GiB limit), whether it ended within the
limit plus slack, and whether any forged text ("FORGED") reached the result. The forged frames use both the
channel's old frame format (a `done` with stdout in its payload) and the current one, so the same script measures a
build from before and after the change. A process still running after 60 s is killed and reported as such.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

FORGE = r'''
import json, os, struct, sys
def frame(header, payload=b""):
    encoded = json.dumps(header).encode()
    return struct.pack("<II", len(encoded), len(payload)) + encoded + payload
def old_done(stdout=b"FORGED", answer="FORGED"):
    return frame({"op": "done", "error": None, "dropped": 0, "answer": answer,
                  "final_var": {"name": "x", "value": "FORGED"}, "stdout_len": len(stdout), "stderr_len": 0}, stdout)
def new_done():
    return frame({"op": "done", "error": None, "dropped": 0, "answer_len": 6, "final_var": None}, b"FORGED")
'''

ATTACKS = {
    "forged done, then spin": FORGE + "os.write(0, old_done())\nos.write(0, new_done())\nwhile True: pass\n",
    "forged output and answer": FORGE + "os.write(0, old_done())\nos.write(0, new_done())\nprint('real output')\n",
    "4 GiB header announced, 256 MiB sent": (
        "import os, struct\nos.write(0, struct.pack('<II', 2**32 - 1, 0))\nchunk = b'{' * (64 << 20)\n"
        "for _ in range(4):\n    os.write(0, chunk)\n"
    ),
    "forged done with 268 M chars of stdout": FORGE + "os.write(0, old_done(stdout=b'x' * 268_000_000))\n",
    "capture patched, 200 M chars printed": (
        "import os, sys\ng = type(sys.stdout).write.__globals__\n"
        "if '_CellOutput' in g:\n"
        "    g['_CellOutput'].write = lambda self, fd, text: os.write(fd, text.encode()) and len(text)\n"
        "else:\n"
        "    g['_Capture'].write = lambda self, index, text: self.parts[index].append(text) or len(text)\n"
        "print('x' * 200_000_000)\n"
    ),
    "150 MB FINAL_VAR": "big = 'z' * (150 << 20)\nFINAL_VAR('big')\n",
    "400 MB llm_query prompt": "r = llm_query('x' * (400 << 20))\nprint(r[:80])\n",
    "2,000,000-prompt batch": "r = llm_query_batched(['q'] * 2_000_000)\nprint(len(r))\n",
}

LIMIT_SECONDS = 3
KILL_AFTER = 60


def run(binary, code):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        path = f.name
    try:
        started = time.monotonic()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-f", "MAXRSS %M", binary, "exec", "--executor", "wasm", "--timeout", str(LIMIT_SECONDS), path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.endswith("API_KEY")},
        )
        try:
            out, err = proc.communicate(timeout=KILL_AFTER)
            killed = False
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            killed = True
        wall = time.monotonic() - started
    finally:
        os.unlink(path)
    rss = re.search(rb"MAXRSS (\d+)", err)
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
        "killed": killed,
        "forged_text": b"FORGED" in out,
        "result": out.decode("utf-8", "replace"),
    }


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "release", "rlm")
    rows = []
    for name, code in ATTACKS.items():
        row = run(binary, code)
        try:
            result = json.loads(row["result"]) if not row["killed"] else {}
        except json.JSONDecodeError:
            result = {}
        error = (result.get("error") or "").strip().splitlines()
        error = error[-1][:90] if error else ""
        rows.append((name, row, error, len(result.get("stdout") or "")))
        print(json.dumps({"attack": name, **{k: v for k, v in row.items() if k != "result"}, "error": error}), flush=True)
    print()
    print(f"| attack | wall s | peak RSS MB | ended within {LIMIT_SECONDS} s + 5 s | forged text | stdout chars | error |")
    print("|---|---|---|---|---|---|---|")
    for name, row, error, stdout_len in rows:
        ended = "killed at 60 s" if row["killed"] else ("yes" if row["wall_s"] <= LIMIT_SECONDS + 5 else "no")
        print(
            f"| {name} | {row['wall_s']} | {row['peak_rss_mb']} | {ended} | {'YES' if row['forged_text'] else 'no'} "
            f"| {stdout_len:,} | {error} |"
        )


if __name__ == "__main__":
    main()
