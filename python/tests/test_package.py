"""The installed package: every exported name, the original's signatures, the console script, typing files."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import rlm
import rlm.local
import rlm.remote
import rlm.wasm
import rlm.cli


def test_every_exported_name_is_there():
    for module in (rlm, rlm.local, rlm.remote, rlm.wasm):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert rlm.LocalRLM_REPL is rlm.local.RLM_REPL
    assert rlm.LocalREPLEnv is rlm.local.REPLEnv
    assert rlm.RemoteREPLEnv is rlm.remote.RemoteREPLEnv
    assert rlm.RemoteREPLFactory is rlm.remote.RemoteREPLFactory
    assert rlm.RemoteExecutionConfig is rlm.remote.RemoteExecutionConfig
    assert rlm.WASMREPLExecutor is rlm.wasm.WASMREPLExecutor
    assert rlm.WASMResult is rlm.wasm.WASMResult
    assert rlm.WASMREPLEnv is rlm.wasm.WASMREPLEnv
    assert issubclass(rlm.local.RLM_REPL, rlm.RLM)
    assert inspect.isabstract(rlm.RLM)
    assert rlm.__version__


def parameters(callable_):
    return [(p.name, p.default) for p in inspect.signature(callable_).parameters.values() if p.name != "self"]


def test_the_original_signatures():
    empty = inspect.Parameter.empty
    assert parameters(rlm.local.RLM_REPL) == [
        ("api_key", None),
        ("model", None),
        ("base_url", None),
        ("recursive_models", None),
        ("recursive_base_urls", None),
        ("max_iterations", 20),
        ("max_depth", 1),
        ("current_depth", 0),
        ("enable_logging", False),
        ("repl_factory", None),
        # Not in the original: the official `rlms` package's flag, added last so positional calls keep working.
        ("persistent", False),
    ]
    assert parameters(rlm.local.RLM_REPL.completion) == [("context", empty), ("query", None)]
    assert parameters(rlm.local.REPLEnv) == [
        ("recursive_models", None),
        ("recursive_base_urls", None),
        ("api_key", None),
        ("context_json", None),
        ("context_str", None),
        ("setup_code", None),
        ("max_depth", 1),
        ("current_depth", 0),
    ]
    assert parameters(rlm.local.Sub_RLM) == [("model", "gpt-5"), ("base_url", None), ("api_key", None)]
    assert [p[0] for p in parameters(rlm.local.REPLResult)] == ["stdout", "stderr", "locals", "execution_time"]
    assert parameters(rlm.remote.RemoteExecutionConfig) == [
        ("wasm_service_url", empty),
        ("timeout", 35),
        ("max_retries", 3),
        ("retry_backoff", 0.5),
        ("verify_ssl", True),
    ]
    assert [p[0] for p in parameters(rlm.remote.RemoteREPLEnv)] == [
        "wasm_service_url",
        "config",
        "recursive_models",
        "recursive_base_urls",
        "api_key",
        "context_json",
        "context_str",
        "setup_code",
        "max_depth",
        "current_depth",
    ]
    assert parameters(rlm.remote.RemoteREPLFactory) == [("wasm_service_url", None)]
    assert [p[0] for p in parameters(rlm.remote.RemoteREPLFactory.create)] == ["max_depth", "current_depth", "kwargs"]
    assert [p[0] for p in parameters(rlm.wasm.WASMResult)] == [
        "stdout",
        "stderr",
        "locals",
        "execution_time",
        "success",
        "error",
    ]
    assert parameters(rlm.wasm.WASMREPLExecutor) == [("timeout", 30)]
    assert parameters(rlm.wasm.WASMREPLEnv) == [("max_depth", 1), ("current_depth", 0), ("timeout", 30)]
    for method in (
        rlm.wasm.WASMREPLExecutor.initialize,
        rlm.wasm.WASMREPLExecutor.execute_code,
        rlm.wasm.WASMREPLExecutor.cleanup,
        rlm.wasm.WASMREPLEnv.initialize,
        rlm.wasm.WASMREPLEnv.code_execution,
        rlm.wasm.WASMREPLEnv.cleanup,
        rlm.local.RLM_REPL.acompletion,
    ):
        assert inspect.iscoroutinefunction(method), method


def test_the_factory_defaults_to_the_environment(monkeypatch):
    assert rlm.remote.RemoteREPLFactory().wasm_service_url == "http://wasm-repl-service:8000"
    monkeypatch.setenv("WASM_SERVICE_URL", "http://sandbox.example:9000/")
    assert rlm.remote.RemoteREPLFactory().wasm_service_url == "http://sandbox.example:9000"


def test_typing_files_ship_with_the_package():
    package = Path(rlm.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "_rlm.pyi").is_file()


def test_the_console_script_runs_the_cli():
    script = Path(sys.executable).parent / "rlm"
    assert script.is_file(), "pip install should install the rlm console script"
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"rlm {rlm.__version__}"
    code = subprocess.run(
        [str(script), "exec", "-"],
        input="x = 6 * 7\nprint(x)",
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "RLM_MODEL"},
    )
    assert code.returncode == 0, code.stderr
    assert '"stdout":"42\\n"' in code.stdout
    bad = subprocess.run([str(script), "no-such-command"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "no-such-command" in bad.stderr


def test_the_cli_entry_point_in_process():
    assert rlm.cli.main(["--version"]) == 0


def test_the_extension_does_not_link_a_second_libpython():
    # The host interpreter provides the C API: a libpython of its own would be a second interpreter in the process.
    extension = rlm._rlm.__file__
    linked = subprocess.run(["ldd", extension], capture_output=True, text=True, timeout=60)
    assert linked.returncode == 0, linked.stderr
    assert "libpython" not in linked.stdout, linked.stdout
