"""`rlm.wasm` (in-process WebAssembly sandbox) and `rlm.remote` (the sandbox service)."""

import asyncio
import time

import pytest

import rlm
from rlm.errors import SandboxConnectionError
from rlm.local import RLM_REPL, REPLResult
from rlm.remote import RemoteExecutionConfig, RemoteREPLEnv, RemoteREPLFactory
from rlm.wasm import WASMREPLEnv, WASMREPLExecutor, WASMResult

from conftest import run_script

# The original README's remote quick start (Option 2, terminal 2), as written but for the service's port.
QUICK_START_REMOTE = '''
from rlm.remote import RemoteREPLFactory
from rlm.local import RLM_REPL

factory = RemoteREPLFactory(wasm_service_url='http://localhost:8000')
rlm = RLM_REPL(model='gpt-5')
result = rlm.completion('context', 'What is 42 + 10?')
print(result)
'''

# The same with the factory passed on (the brief's form): the code runs in the service.
QUICK_START_REMOTE_FACTORY = '''
from rlm.remote import RemoteREPLFactory
from rlm.local import RLM_REPL

factory = RemoteREPLFactory(wasm_service_url='http://localhost:8000')
assert factory.health_check() and factory.readiness_check()
rlm = RLM_REPL(model='gpt-5-mini', max_depth=3, repl_factory=factory)
print(rlm.completion('context', 'What is 42 + 10?'))
'''

IN_SANDBOX = [
    "```repl\nimport sys\nprint(sys.platform, 42 + 10)\nprint(llm_query('check 52'))\n```",
    "52 checked",
    "FINAL(52)",
]


def test_wasm_executor_runs_code_in_the_sandbox():
    executor = WASMREPLExecutor(timeout=30)
    result = executor.execute("x = 41\nprint(x + 1)", context={"numbers": [1, 2]})
    assert isinstance(result, WASMResult)
    assert (result.stdout, result.success, result.error) == ("42\n", True, None)
    assert result.locals["x"] == "41" and result.locals["numbers"] == "[1, 2]"
    assert executor.execute("print(context['numbers'][1])", context={"numbers": [1, 2]}).stdout == "2\n"
    blocked = executor.execute("open('/etc/hostname').read()")
    assert not blocked.success and "FileNotFoundError" in blocked.error
    assert executor.execute("print(x)").stdout == "41\n", "the session keeps its variables"
    executor.close()


def test_wasm_async_api():
    async def main():
        executor = WASMREPLExecutor()
        await executor.initialize()
        first = await executor.execute_code("import sys\nsys.platform")
        await executor.cleanup()
        env = WASMREPLEnv(max_depth=1, current_depth=0, timeout=10)
        await env.initialize()
        second = await env.code_execution("y = 2 ** 10\nprint(y)", context="the text")
        third = await env.code_execution("print(len(context))")
        await env.cleanup()
        return first, second, third

    first, second, third = asyncio.run(main())
    assert first.stdout == "'wasi'\n"
    assert isinstance(second, REPLResult) and second.stdout == "1024\n"
    assert third.stdout == "8\n"


def test_wasm_bad_arguments():
    with pytest.raises(TypeError, match="timeout"):
        WASMREPLExecutor(timeout="soon")
    with pytest.raises(TypeError, match="code"):
        WASMREPLExecutor().execute(b"print(1)")


def test_factory_checks_and_remote_env(sandbox_url):
    factory = RemoteREPLFactory(wasm_service_url=sandbox_url)
    assert factory.health_check() and factory.readiness_check()
    env = factory.create(context_json={"k": "v"})
    assert isinstance(env, RemoteREPLEnv)
    first = env.code_execution("z = 3\nprint(z)")
    assert first.stdout == "3\n"
    # Values come back with their JSON types and travel back as globals with the next call: state persists.
    assert env.variables["z"] == 3 and env.variables["context"] == {"k": "v"}
    assert env.code_execution("print(z * 2, context['k'])").stdout == "6 v\n"
    failed = env.code_execution("1/0")
    assert failed.stderr.strip().endswith("division by zero")
    assert failed.stderr.count("ZeroDivisionError") == 1, failed.stderr
    config = RemoteExecutionConfig(wasm_service_url=sandbox_url, timeout=20)
    assert RemoteREPLEnv(config=config).code_execution("print('hi')").stdout == "hi\n"


def test_rlm_repl_runs_its_code_in_the_service(scripted, sandbox_url):
    server = scripted(list(IN_SANDBOX))
    model = RLM_REPL(base_url=server.url, repl_factory=RemoteREPLFactory(wasm_service_url=sandbox_url))
    result = model.completion_result("context", "What is 42 + 10?")
    assert result.answer == "52"
    assert result.sub_calls == 1, "the sub-call came back to this process"
    assert "wasi 52" in str(server.requests[1]["messages"]) or "wasi 52" in str(server.requests[2]["messages"])


def test_quick_starts_remote(scripted, sandbox_url):
    local_url = sandbox_url.replace("127.0.0.1", "localhost")
    server = scripted(["```repl\nprint(42 + 10)\n```", "FINAL(52)"])
    done = run_script(QUICK_START_REMOTE.replace("http://localhost:8000", local_url), {"LLM_BASE_URL": server.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "52"
    server = scripted(list(IN_SANDBOX))
    done = run_script(
        QUICK_START_REMOTE_FACTORY.replace("http://localhost:8000", local_url), {"LLM_BASE_URL": server.url}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "52"
    print(f"quick start (remote) printed: {done.stdout.strip()!r}")


def test_an_unreachable_service(scripted):
    factory = RemoteREPLFactory(wasm_service_url="http://127.0.0.1:9")
    started = time.monotonic()
    assert not factory.health_check() and not factory.readiness_check()
    server = scripted(["```repl\nprint(1)\n```", "FINAL(1)"])
    with pytest.raises(SandboxConnectionError, match="unreachable") as caught:
        RLM_REPL(base_url=server.url, repl_factory=factory).completion("c", "q")
    assert isinstance(caught.value, ConnectionError) and isinstance(caught.value, rlm.SandboxError)
    env = factory.create()
    env.config.max_retries = 0
    assert "cannot reach" in env.code_execution("print(1)").stderr
    assert time.monotonic() - started < 30


def test_remote_bad_arguments():
    with pytest.raises(ValueError, match="wasm_service_url"):
        RemoteREPLFactory(wasm_service_url="localhost:8000")
    with pytest.raises(TypeError, match="wasm_service_url"):
        RemoteREPLFactory(wasm_service_url=8000)
    with pytest.raises(TypeError, match="config"):
        RemoteREPLEnv(config={"timeout": 3})
