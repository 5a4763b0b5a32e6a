"""Per-turn overhead of `RLM_REPL.completion()` from Python against the `rlm` CLI, on the same scripted server.

    python python/tests/bench_overhead.py [--cli target/debug/rlm] [--turns 16] [--repeat 5]

A run of T turns is T-1 code turns and a FINAL. The per-turn cost is the difference between a long and a 2-turn
run divided by the extra turns, which cancels fixed costs (the CLI's process start, the Python call's set-up), so
both sides measure the same thing: a model round trip to a zero-latency server, the engine, and one REPL cell.
Minimum of `--repeat` runs each. Both sides write their JSONL trace, as by default.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scripted_server import ScriptedServer  # noqa: E402


def reply(turns: int):
    def answer(request):
        done = sum(1 for m in request["messages"] if m["role"] == "assistant")
        if done + 1 < turns:
            # Distinct code every turn: the engine stops runs that repeat themselves.
            return f"```repl\nvalue_{done} = {done} * 2\nprint(value_{done})\n```"
        return f"FINAL({(done - 1) * 2})"

    return answer


def python_run(model, turns_hint: str) -> float:
    started = time.perf_counter()
    model.completion("benchmark context", turns_hint)
    return time.perf_counter() - started


def cli_run(cli: str, url: str, context: Path, turns_hint: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [cli, "run", "--context", str(context), "--query", turns_hint, "--model", "bench", "--base-url", url,
         "--route", "rlm", "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cli", default="target/debug/rlm", help="the rlm binary (default: target/debug/rlm)")
    parser.add_argument("--turns", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from rlm.local import RLM_REPL

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RLM_TRACE_DIR"] = str(Path(tmp) / "traces")
        context = Path(tmp) / "context.txt"
        context.write_text("benchmark context")
        results = {}
        for turns in (2, args.turns):
            with ScriptedServer(default=reply(turns)) as server:
                model = RLM_REPL(base_url=server.url, model="bench", max_iterations=max(turns, 20))
                python_run(model, "warm-up")
                results[("python", turns)] = min(python_run(model, "q") for _ in range(args.repeat))
                results[("cli", turns)] = min(cli_run(args.cli, server.url, context, "q") for _ in range(args.repeat))
        extra = args.turns - 2
        per_turn = {side: (results[(side, args.turns)] - results[(side, 2)]) / extra for side in ("python", "cli")}
        for side in ("python", "cli"):
            print(
                f"{side:>6}: 2 turns {results[(side, 2)] * 1000:8.1f} ms, {args.turns} turns "
                f"{results[(side, args.turns)] * 1000:8.1f} ms, per turn {per_turn[side] * 1000:6.2f} ms"
            )
        ratio = per_turn["python"] / per_turn["cli"]
        print(f"per-turn overhead, Python / CLI: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
