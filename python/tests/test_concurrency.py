"""The GIL is released while the engine works; Ctrl-C and task cancellation stop a run cleanly."""

import _thread
import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlm.local import RLM_REPL

# Replies that differ every turn: the engine stops a run that repeats itself, and these runs must last until the
# interrupt or cancellation under test stops them (60 turns at 0.3 s each).
DISTINCT_CELLS = [f"```repl\nprint({turn})\n```" for turn in range(60)]


@pytest.fixture
def default_ctrl_c():
    """Ctrl-C as a program started from a terminal has it, whatever this test process inherited (a job started in
    the background by a non-interactive shell starts with SIGINT ignored, and Python then installs no handler)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _terminal_like_sigint() -> None:
    """In a child: SIGINT at its default disposition, so that Python installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

TWO_TURNS = ["```repl\nprint(len(context))\n```", "FINAL(done)"]


def test_two_completions_run_at_once_from_two_threads(scripted):
    delay = 0.5
    # Each run needs two model calls (code, then FINAL): one run alone takes at least 2 * delay.
    server = scripted([TWO_TURNS[0], TWO_TURNS[0]], default="FINAL(done)", delay=delay)
    model = RLM_REPL(base_url=server.url)
    answers = []
    ticks = []

    def run():
        answers.append(model.completion("some context", "q"))

    def tick():
        # Pure-Python work: it only advances while the completions leave the GIL free.
        end = time.monotonic() + 2 * delay
        while time.monotonic() < end:
            ticks.append(1)
            time.sleep(0.01)

    threads = [threading.Thread(target=run) for _ in range(2)] + [threading.Thread(target=tick)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - started
    assert answers == ["done", "done"]
    assert elapsed < 4 * delay * 0.9, f"two runs of 2 x {delay}s took {elapsed:.2f}s: they did not overlap"
    # About 100 when the GIL is free; a run holding it throughout would leave a handful.
    assert len(ticks) > 20, f"another Python thread ran only {len(ticks)} times"


def test_keyboard_interrupt_cancels_the_run(scripted, default_ctrl_c):
    server = scripted(DISTINCT_CELLS, delay=0.3)
    model = RLM_REPL(base_url=server.url, max_iterations=100)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        model.completion("c", "q")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"the interrupt took {elapsed:.2f}s to stop the run"
    calls = len(server.requests)
    time.sleep(1.0)
    assert len(server.requests) <= calls + 1, "the run went on after the interrupt"


def test_ctrl_c_in_a_script_stops_it(scripted):
    server = scripted(DISTINCT_CELLS, delay=0.3)
    code = (
        "from rlm.local import RLM_REPL\n"
        f"print('started', flush=True)\nRLM_REPL(base_url={server.url!r}, max_iterations=100).completion('c', 'q')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_terminal_like_sigint,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=20)
    assert time.monotonic() - started < 3
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr


def test_ctrl_c_in_the_console_script_run_exits_130(scripted, tmp_path):
    server = scripted(DISTINCT_CELLS, delay=0.3)
    context = tmp_path / "context.txt"
    context.write_text("some text")
    script = str(Path(sys.executable).parent / "rlm")
    command = [script, "run", "-c", str(context), "-q", "q", "--model", "m", "--base-url", server.url, "--route", "rlm"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_terminal_like_sigint
    )
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert "cancelled" in stderr and "Traceback" not in stderr


def test_cancelling_the_async_task_cancels_the_run(scripted):
    server = scripted(DISTINCT_CELLS, delay=0.3)
    model = RLM_REPL(base_url=server.url, max_iterations=100)

    async def main():
        task = asyncio.create_task(model.acompletion("c", "q"))
        await asyncio.sleep(0.5)
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(main()) < 2.0
    calls = len(server.requests)
    time.sleep(1.0)
    assert len(server.requests) <= calls + 1


def test_async_completion(scripted):
    server = scripted(TWO_TURNS)
    model = RLM_REPL(base_url=server.url)

    async def main():
        return await model.acompletion_result("c", "q")

    result = asyncio.run(main())
    assert (result.answer, result.iterations) == ("done", 2)
