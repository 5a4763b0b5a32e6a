"""Fixtures: a scripted model server, a clean environment, and the sandbox service."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from scripted_server import ScriptedServer  # noqa: E402

MODEL_ENV = [
    "OPENAI_API_KEY",
    "LLM_API_KEY",
    "OPENAI_BASE_URL",
    "LLM_BASE_URL",
    "LLM_MODEL",
    "RLM_MODEL",
    "LLM_RECURSIVE_MODEL",
    "LLM_RECURSIVE_BASE_URL",
    "WASM_SERVICE_URL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in MODEL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RLM_TRACE_DIR", str(tmp_path / "traces"))


@pytest.fixture
def scripted() -> Iterator[type]:
    """`with scripted([...]) as server:` — servers started in a test are shut down after it."""
    started: List[ScriptedServer] = []

    def start(*args, **kwargs) -> ScriptedServer:
        server = ScriptedServer(*args, **kwargs).__enter__()
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """The sandbox service, started as the original documents it: `python -m rlm.wasm.repl_wasm_service`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rlm.wasm.repl_wasm_service", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300  # the first start compiles CPython's module (cached afterwards)
        url = None
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            process.kill()
            pytest.fail(f"the sandbox service did not start: {process.stdout.read()}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def run_script(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` as a separate Python program (as a user would run a quick start)."""
    full_env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout
    )
