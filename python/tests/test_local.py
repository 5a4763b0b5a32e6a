"""`rlm.local` over the Rust engine, against the scripted model server."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import rlm
from rlm.errors import ConfigurationError, ModelError, RunError
from rlm.local import RLM_REPL, REPLEnv, REPLResult, Sub_RLM

from conftest import run_script

LOOK_THEN_ANSWER = [
    "I will look at the context first.\n```repl\nprint(len(context))\nprint(llm_query('Say hi'))\n```",
    "hi from the sub-model",
    "FINAL(52)",
]

# The original README's local quick start ("Basic Local Execution"), as written; the base URL comes from LLM_BASE_URL.
QUICK_START_LOCAL = '''
from rlm.local import RLM_REPL

# Initialize RLM
rlm = RLM_REPL(
    api_key="your-key",
    model="gpt-5",
    max_depth=3
)

# Run inference
context = "You are a helpful assistant that can execute Python code."
query = "What is the square root of 256?"

result = rlm.completion(context, query)
print(result)
'''

# The brief's form: a key from the environment, a small model, logging on.
QUICK_START_LOGGING = '''
import os
from rlm.local import RLM_REPL
rlm = RLM_REPL(api_key=os.getenv("OPENAI_API_KEY"), model="gpt-5-mini", max_depth=3, enable_logging=True)
print(rlm.completion(context="The answer is 52. " * 1000, query="What is the answer?"))
'''


def test_quick_start_local_as_written(scripted):
    server = scripted(["```repl\nimport math\nprint(math.sqrt(256))\n```", "FINAL(16)"])
    done = run_script(QUICK_START_LOCAL, {"LLM_BASE_URL": server.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "16"
    assert server.requests[0]["model"] == "gpt-5"
    print(f"quick start (local) printed: {done.stdout.strip()!r}")


def test_quick_start_with_logging(scripted):
    server = scripted(LOOK_THEN_ANSWER)
    done = run_script(QUICK_START_LOGGING, {"LLM_BASE_URL": server.url, "OPENAI_API_KEY": "sk-test"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "52"
    assert "finished by final after 2 iterations, 1 sub-calls" in done.stderr
    assert "hi from the sub-model" in done.stderr
    assert [r["model"] for r in server.requests] == ["gpt-5-mini", "gpt-5-mini", "gpt-5-mini"]
    print(f"quick start (logging) printed: {done.stdout.strip()!r}; log:\n{done.stderr}")


def test_rich_result_and_cost_summary(scripted):
    server = scripted(LOOK_THEN_ANSWER)
    model = RLM_REPL(base_url=server.url, model="root-model", recursive_models=["sub-model"])
    result = model.completion_result({"doc": "text"}, "What is the answer?")
    assert isinstance(result, rlm.RLMResult)
    assert (result.answer, result.finished_by, result.iterations, result.sub_calls) == ("52", "final", 2, 1)
    assert result.path == "rlm"
    assert result.trace_path and Path(result.trace_path).is_file()
    events = [json.loads(line) for line in Path(result.trace_path).read_text().splitlines()]
    assert events[-1]["finished_by"] == "final"
    assert [r["model"] for r in server.requests] == ["root-model", "sub-model", "root-model"]
    costs = model.cost_summary()
    assert costs["runs"] == 1 and costs["total"]["calls"] == 3
    assert set(costs["by_model"]) == {"root-model", "sub-model"}
    model.reset()
    assert model.cost_summary()["runs"] == 0


def test_the_original_environment_variables(scripted, monkeypatch):
    server = scripted(LOOK_THEN_ANSWER)
    monkeypatch.setenv("LLM_BASE_URL", server.url)
    monkeypatch.setenv("LLM_MODEL", "env-root")
    monkeypatch.setenv("LLM_RECURSIVE_MODEL", "env-sub")
    monkeypatch.setenv("LLM_API_KEY", "sk-from-llm-api-key")
    assert RLM_REPL().completion("some context", "question") == "52"
    assert [r["model"] for r in server.requests] == ["env-root", "env-sub", "env-root"]


def test_the_recursive_model_is_called_at_its_own_base_url(scripted, monkeypatch):
    root = scripted([LOOK_THEN_ANSWER[0], LOOK_THEN_ANSWER[2]])
    sub = scripted(["hi from the other endpoint"])
    monkeypatch.setenv("LLM_RECURSIVE_BASE_URL", sub.url)
    assert RLM_REPL(base_url=root.url, recursive_models=["small"]).completion("ctx", "q") == "52"
    assert [r["model"] for r in sub.requests] == ["small"]
    assert "hi from the other endpoint" in json.dumps(root.requests[1]["messages"])
    other = scripted(["hi again"])
    root = scripted([LOOK_THEN_ANSWER[0], LOOK_THEN_ANSWER[2]])
    model = RLM_REPL(base_url=root.url, recursive_models=["small"], recursive_base_urls=[other.url])
    assert model.completion("ctx", "q") == "52" and len(other.requests) == 1


def test_context_kinds_reach_the_repl(scripted):
    code = "```repl\nprint(type(context).__name__, len(context))\n```"
    for context, shown in [("abc", "str 3"), (["a", "b"], "list 2"), ({"k": 1}, "dict 1")]:
        server = scripted([code, "FINAL(ok)"])
        assert RLM_REPL(base_url=server.url).completion(context, "q") == "ok"
        assert shown in json.dumps(server.requests[1]["messages"])


def test_persistent_completions_share_one_repl(scripted):
    server = scripted(
        [
            "```repl\ncount = len(context.split())\n```\nFINAL_VAR(count)",
            # The second completion's context is context_1; `count` and the first conversation are still there.
            "```repl\ntotal = count + len(context_1.split()) + 0 * len(history_0)\n```\nFINAL_VAR(total)",
            "```repl\nprint('count' in globals())\n```",
            "FINAL(fresh)",
        ]
    )
    model = RLM_REPL(base_url=server.url, persistent=True)
    assert model.completion("a b c", "How many words?") == "3"
    assert model.completion("d e", "And with the new words?") == "5"
    assert "query 2 of a session" in json.dumps(server.requests[1]["messages"])
    # reset() starts a fresh REPL.
    model.reset()
    assert model.completion("x", "Anything left?") == "fresh"
    assert "False" in json.dumps(server.requests[3]["messages"])
    with pytest.raises(TypeError):
        RLM_REPL(base_url=server.url, persistent="yes")


def test_no_key_and_no_base_url_is_a_clear_error_in_each_front():
    with pytest.raises(ConfigurationError) as caught:
        RLM_REPL()
    assert isinstance(caught.value, ValueError)
    # Each front names its own way to give a key or an endpoint.
    assert "no API key for OpenAI" in str(caught.value)
    assert "api_key=" in str(caught.value) and "OPENAI_API_KEY" in str(caught.value)
    cli = subprocess.run(
        [sys.executable, "-m", "rlm.cli", "run", "--context", "-", "--query", "q", "--model", "gpt-5"]
        + ["--route", "rlm"],
        input="x",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0
    assert "no API key for OpenAI" in cli.stderr and "--base-url" in cli.stderr
    with pytest.raises(ValueError):
        REPLEnv()
    with pytest.raises(ValueError):
        Sub_RLM()


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"max_iterations": "3"}, TypeError, "max_iterations"),
        ({"max_iterations": 0}, ValueError, "max_iterations"),
        ({"max_depth": 1.5}, TypeError, "max_depth"),
        ({"model": 3}, TypeError, "model"),
        ({"api_key": b"k"}, TypeError, "api_key"),
        ({"recursive_models": 5}, TypeError, "recursive_models"),
        ({"enable_logging": "yes"}, TypeError, "enable_logging"),
        ({"repl_factory": "http://x"}, TypeError, "repl_factory"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        RLM_REPL(base_url="http://127.0.0.1:9/v1", **kwargs)


def test_bad_completion_arguments(scripted):
    model = RLM_REPL(base_url=scripted().url)
    with pytest.raises(TypeError, match="context"):
        model.completion(object(), "q")
    with pytest.raises(TypeError, match="query"):
        model.completion("c", 5)


def test_an_unreachable_model_is_a_model_error():
    model = RLM_REPL(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ModelError) as caught:
        model.completion("c", "q")
    assert caught.value.result is not None
    assert caught.value.result.finished_by == "error"


def test_no_answer_within_the_limits_is_a_run_error(scripted):
    server = scripted(default="```repl\nprint(1)\n```")
    with pytest.raises(RunError) as caught:
        RLM_REPL(base_url=server.url, max_iterations=2).completion("c", "q")
    assert caught.value.result.iterations == 2


def test_repl_env_keeps_state_and_reports_errors(scripted):
    server = scripted(["sub-model says hi"])
    env = REPLEnv(context_json={"a": 1}, context_str="the text wins", setup_code="base = 40", api_key="k",
                  recursive_base_urls=[server.url])
    result = env.code_execution("total = base + len(context) - 11\ntotal")
    assert isinstance(result, REPLResult)
    assert result.stdout == "42\n"
    assert result.locals["total"] == "42" and result.locals["base"] == "40"
    assert result.execution_time >= 0
    failed = env.code_execution("1/0")
    assert "ZeroDivisionError" in failed.stderr
    assert env.code_execution("print(llm_query('hello'))").stdout == "sub-model says hi\n"
    env.close()


def test_sub_rlm_is_one_model_call(scripted):
    server = scripted(["plain answer"])
    assert Sub_RLM(model="small", base_url=server.url).completion("question?") == "plain answer"
    assert server.requests[0]["model"] == "small"
    assert server.requests[0]["messages"][-1]["content"] == "question?"


def test_host_output_is_not_captured_by_the_repl(scripted, capsys):
    server = scripted(["```repl\nprint('from the cell')\n```", "FINAL(from the cell)"])
    print("before")
    assert RLM_REPL(base_url=server.url).completion("c", "q") == "from the cell"
    print("after")
    out = capsys.readouterr().out
    assert "before" in out and "after" in out and "from the cell" not in out


def test_logs_go_through_python_logging(scripted, caplog):
    server = scripted(LOOK_THEN_ANSWER)
    with caplog.at_level(logging.INFO, logger="rlm"):
        RLM_REPL(base_url=server.url, enable_logging=True).completion("c", "q")
    messages = [r.getMessage() for r in caplog.records if r.name == "rlm.run"]
    assert any("finished by final" in m for m in messages), messages


def test_model_code_runs_in_this_interpreter():
    # No second libpython: the extension runs cells in the host interpreter, whose modules the cell sees.
    marker = object()
    sys.rlm_host_marker = marker  # type: ignore[attr-defined]
    try:
        with REPLEnv(api_key="k") as env:
            assert env.code_execution("import sys\nprint(id(sys.rlm_host_marker))").stdout == f"{id(marker)}\n"
    finally:
        del sys.rlm_host_marker  # type: ignore[attr-defined]


def test_unclosed_repl_envs_do_not_break_the_exit():
    code = (
        "import gc\nfrom rlm.local import REPLEnv\n"
        "kept = REPLEnv(api_key='k', context_str='x' * 1000)\nprint(kept.code_execution('len(context)').stdout.strip())\n"
        "dropped = REPLEnv(api_key='k')\ndropped.code_execution('y = 1')\ndel dropped\ngc.collect()\nprint('exiting')\n"
    )
    done = run_script(code, {}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1000", "exiting"]
