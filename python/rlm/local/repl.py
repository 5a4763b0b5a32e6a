"""``REPLEnv``, ``REPLResult`` and ``Sub_RLM``: a persistent Python REPL and a plain model call."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .. import _rlm, _util


@dataclass
class REPLResult:
    """One cell's outcome. ``stderr`` includes the traceback of an exception the code raised; ``locals`` maps the
    user's variable names to ``str()`` of their values."""

    stdout: str
    stderr: str
    locals: Dict[str, Any] = field(default_factory=dict)
    execution_time: float = 0.0

    def __str__(self) -> str:
        return f"REPLResult(stdout={self.stdout!r}, stderr={self.stderr!r}, execution_time={self.execution_time:.4f})"


class Sub_RLM:
    """One plain call to a model: what ``llm_query`` in the REPL does."""

    def __init__(self, model: str = _util.DEFAULT_MODEL, base_url: Optional[str] = None, api_key: Optional[str] = None):
        self.model = _util.check_str("model", model, optional=False)
        self.base_url = _util.check_str("base_url", base_url) or _util.env("LLM_BASE_URL")
        _util.bridge_logs()
        self._engine = _util.engine(self.model, [self.model], self.base_url, _util.api_key(api_key), trace=False)

    def completion(self, prompt: Any) -> str:
        """The model's answer to `prompt` (a str; anything else is sent as its ``str()``)."""
        return self._engine.complete(prompt if isinstance(prompt, str) else str(prompt), self.model)


def cell_result(session: Any, code: str) -> REPLResult:
    stdout, stderr, error, seconds = session.run_cell(code)
    if error:
        stderr = f"{stderr}{'' if not stderr or stderr.endswith(chr(10)) else chr(10)}{error}"
    return REPLResult(stdout=stdout, stderr=stderr, locals=dict(session.variables()), execution_time=seconds)


def context_of(context_json: Any, context_str: Optional[str]) -> "tuple[str, str]":
    """``context_str`` wins over ``context_json`` when both are given (as in the original)."""
    if context_str is not None:
        return "text", _util.check_str("context_str", context_str, optional=False) or ""
    if context_json is not None:
        return _util.context_arg("context_json", context_json)
    return "text", ""


class REPLEnv:
    """A persistent Python REPL (the local executor: the host interpreter, not a sandbox) with ``context`` loaded
    and ``llm_query`` answered by the recursive model. Like the original, it needs a key (or a base URL)."""

    def __init__(
        self,
        recursive_models: Optional[List[str]] = None,
        recursive_base_urls: Optional[List[str]] = None,
        api_key: Optional[str] = None,
        context_json: Any = None,
        context_str: Optional[str] = None,
        setup_code: Optional[str] = None,
        max_depth: int = 1,
        current_depth: int = 0,
    ) -> None:
        models, url = _util.recursive_settings(recursive_models, recursive_base_urls, None)
        self.max_depth = _util.check_int("max_depth", max_depth, 0)
        self.current_depth = _util.check_int("current_depth", current_depth, 0)
        _util.check_str("setup_code", setup_code)
        self.sub_rlm = Sub_RLM(model=models[0], base_url=url, api_key=api_key)
        kind, text = context_of(context_json, context_str)
        self._session = _rlm.open_session("local", kind, text, engine=self.sub_rlm._engine)
        if setup_code:
            self.code_execution(setup_code)

    def code_execution(self, code: str) -> REPLResult:
        """Runs `code` in the REPL; a trailing expression's value is printed, as in a notebook."""
        return cell_result(self._session, _util.check_str("code", code, optional=False) or "")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "REPLEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
