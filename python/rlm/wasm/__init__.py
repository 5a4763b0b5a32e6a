"""Model code in a WebAssembly sandbox in this process (CPython compiled to WASI, run by wasmtime): no files,
network or environment. Needs the module that ``scripts/fetch-python-wasm.sh`` installs (or ``$RLM_PYTHON_WASM``).

The original's methods are ``async``; each has a blocking twin (``execute``, ``code_execution_sync``).
"""

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .. import _rlm, _util
from ..local.repl import REPLResult


@dataclass
class WASMResult:
    stdout: str
    stderr: str
    locals: Dict[str, Any] = field(default_factory=dict)
    execution_time: float = 0.0
    success: bool = True
    error: Optional[str] = None


class WASMREPLExecutor:
    """A persistent sandboxed REPL; each cell may take at most `timeout` seconds."""

    def __init__(self, timeout: float = 30) -> None:
        self.timeout = _util.check_number("timeout", timeout, 0.001)
        self._session: Any = None
        self._context: Any = None

    def _ensure(self, context: Any = None) -> Any:
        """The session; a new one (variables lost) when a different `context` is given."""
        if self._session is not None and (context is None or context == self._context):
            return self._session
        kind, text = _util.context_arg("context", "" if context is None else context)
        self.close()
        self._session = _rlm.open_session("wasm", kind, text, cell_timeout=self.timeout)
        self._context = context
        if isinstance(context, dict):
            # The original injected a dict's keys as variables; `context` holds the whole dict as well.
            setup = f"import json as _j\nglobals().update(_j.loads({text!r}))\ndel _j"
            _, _, error, _ = self._session.run_cell(setup)
            if error:
                raise ValueError(f"context: cannot set its keys as variables: {error}")
        return self._session

    async def initialize(self) -> None:
        """Starts the sandbox (loading the compiled interpreter: milliseconds when cached, seconds the first time)."""
        await asyncio.get_running_loop().run_in_executor(None, self._ensure)

    def execute(self, code: str, context: Any = None) -> WASMResult:
        """Runs `code`. `context` becomes the ``context`` variable (a dict's keys become variables too); giving a
        different one starts a fresh sandbox."""
        _util.check_str("code", code, optional=False)
        session = self._ensure(context)
        stdout, stderr, error, seconds = session.run_cell(code)
        return WASMResult(
            stdout=stdout,
            stderr=stderr if not error else f"{stderr}{error}",
            locals=dict(session.variables()),
            execution_time=seconds,
            success=error is None,
            error=error,
        )

    async def execute_code(self, code: str, context: Any = None) -> WASMResult:
        """:meth:`execute` without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(self.execute, code, context))

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    async def cleanup(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)


class WASMREPLEnv:
    """The sandboxed twin of :class:`rlm.local.REPLEnv`: ``code_execution`` returns a ``REPLResult``."""

    def __init__(self, max_depth: int = 1, current_depth: int = 0, timeout: float = 30) -> None:
        self.max_depth = _util.check_int("max_depth", max_depth, 0)
        self.current_depth = _util.check_int("current_depth", current_depth, 0)
        self.executor = WASMREPLExecutor(timeout=timeout)

    async def initialize(self) -> None:
        await self.executor.initialize()

    def code_execution_sync(self, code: str, context: Any = None) -> REPLResult:
        result = self.executor.execute(code, context)
        return REPLResult(result.stdout, result.stderr, result.locals, result.execution_time)

    async def code_execution(self, code: str, context: Any = None) -> REPLResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.code_execution_sync, code, context))

    async def cleanup(self) -> None:
        await self.executor.cleanup()


__all__ = ["WASMREPLExecutor", "WASMResult", "WASMREPLEnv"]

