"""Per-turn overhead of `RLM_REPL.completion()` from Python against the `rlm` CLI, on the same scripted server.

    python python/tests/bench_overhead.py [--cli target/debug/rlm] [--turns 100] [--repeat 11]

A run of T turns is T-1 code turns and a FINAL. The per-turn cost is the difference between a long and a 2-turn
run divided by the extra turns, which cancels fixed costs (the CLI's process start, the Python call's set-up), so
both sides measure the same thing: a model round trip to a zero-latency server, the engine, and one REPL cell.
Minimum of `--repeat` runs each. Both sides write their JSONL trace, as by default. The scripted server runs in a
process of its own, so that it competes with neither side for a GIL.
"""

import argparse
import os
import resource
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


def python_run(model, turns_hint: str) -> "tuple[float, float]":
    """(wall seconds, CPU seconds of this process: all its threads)."""
    started, cpu = time.perf_counter(), time.process_time()
    model.completion("benchmark context", turns_hint)
    return time.perf_counter() - started, time.process_time() - cpu


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_run(cli: str, url: str, context: Path, turns_hint: str, max_iterations: str) -> "tuple[float, float]":
    """(wall seconds, CPU seconds of the CLI process)."""
    started, cpu = time.perf_counter(), children_cpu()
    subprocess.run(
        [cli, "run", "--context", str(context), "--query", turns_hint, "--model", "bench", "--base-url", url,
         "--route", "rlm", "--quiet", "--max-iterations", max_iterations],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started, children_cpu() - cpu


def serve(turns: int) -> None:
    with ScriptedServer(default=reply(turns)) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the benchmark closes the pipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cli", default="target/debug/rlm", help="the rlm binary (default: target/debug/rlm)")
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    from rlm.local import RLM_REPL

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RLM_TRACE_DIR"] = str(Path(tmp) / "traces")
        context = Path(tmp) / "context.txt"
        context.write_text("benchmark context")
        results = {}
        for turns in (2, args.turns):
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(turns)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.stdout is not None
                url = server.stdout.readline().strip()
                limit = str(turns + 5)
                model = RLM_REPL(base_url=url, model="bench", max_iterations=turns + 5)
                python_run(model, "warm-up")
                python = [python_run(model, "q") for _ in range(args.repeat)]
                cli = [cli_run(args.cli, url, context, "q", limit) for _ in range(args.repeat)]
                # Minimum of each: the run least disturbed by other work on the machine.
                results[("python", turns)] = tuple(min(r[i] for r in python) for i in (0, 1))
                results[("cli", turns)] = tuple(min(r[i] for r in cli) for i in (0, 1))
            finally:
                server.communicate(input="", timeout=30)
        extra = args.turns - 2
        per_turn = {
            (side, i): (results[(side, args.turns)][i] - results[(side, 2)][i]) / extra
            for side in ("python", "cli")
            for i in (0, 1)
        }
        for side in ("python", "cli"):
            print(
                f"{side:>6}: wall 2 turns {results[(side, 2)][0] * 1000:7.1f} ms, {args.turns} turns "
                f"{results[(side, args.turns)][0] * 1000:7.1f} ms, per turn {per_turn[(side, 0)] * 1000:5.2f} ms; "
                f"CPU per turn {per_turn[(side, 1)] * 1000:5.2f} ms"
            )
        wall = per_turn[("python", 0)] / per_turn[("cli", 0)]
        cpu = per_turn[("python", 1)] / per_turn[("cli", 1)]
        print(
            f"per-turn overhead, Python / CLI: wall {wall:.3f} ({(wall - 1) * 100:+.1f}%), "
            f"CPU {cpu:.3f} ({(cpu - 1) * 100:+.1f}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
