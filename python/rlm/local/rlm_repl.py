"""``RLM_REPL``: the Recursive Language Model over a Python REPL, run by the Rust engine."""

import asyncio
import functools
from typing import Any, Dict, List, Optional

from .. import _rlm, _util
from ..result import RLMResult
from ..rlm import RLM


class RLM_REPL(RLM):
    """Answers queries over contexts far larger than the model's window.

    Arguments as in the original package; unset ones come from the environment: the key from ``OPENAI_API_KEY`` or
    ``LLM_API_KEY``, ``model`` from ``LLM_MODEL`` (else ``gpt-5``), ``base_url`` from ``LLM_BASE_URL``, the
    sub-model from ``LLM_RECURSIVE_MODEL`` (else ``gpt-5-mini``). With ``repl_factory`` (a
    :class:`rlm.remote.RemoteREPLFactory`) the model's code runs in that sandbox service; sub-calls still come back
    to this process, which holds the key.

    With ``persistent=True`` (as in the official ``rlms`` package) every :meth:`completion` answers in the same REPL:
    variables built by one query are there for the next; the first call's context is ``context`` (also
    ``context_0``), each later call's context is added as ``context_1``, ``context_2``, …; earlier conversations are
    ``history_0``, ``history_1``, … (lists of ``{"role", "content"}`` dicts). :meth:`reset` starts a fresh REPL.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        model: Optional[str] = None,
        base_url: Optional[str] = None,
        recursive_models: Optional[List[str]] = None,
        recursive_base_urls: Optional[List[str]] = None,
        max_iterations: int = 20,
        max_depth: int = 1,
        current_depth: int = 0,
        enable_logging: bool = False,
        repl_factory: Any = None,
        persistent: bool = False,
    ) -> None:
        key = _util.api_key(api_key)
        self.model = _util.check_str("model", model) or _util.env("LLM_MODEL") or _util.DEFAULT_MODEL
        self.base_url = _util.check_str("base_url", base_url) or _util.env("LLM_BASE_URL")
        self.recursive_models, self.recursive_base_url = _util.recursive_settings(
            recursive_models, recursive_base_urls, self.base_url
        )
        self.max_iterations = _util.check_int("max_iterations", max_iterations, 1)
        self.max_depth = _util.check_int("max_depth", max_depth, 0)
        self.current_depth = _util.check_int("current_depth", current_depth, 0)
        if not isinstance(enable_logging, bool):
            raise TypeError(f"enable_logging must be a bool, not {type(enable_logging).__name__}")
        self.enable_logging = enable_logging
        if not isinstance(persistent, bool):
            raise TypeError(f"persistent must be a bool, not {type(persistent).__name__}")
        self.persistent = persistent
        self._conversation: Any = None
        executor, sandbox_url = "local", None
        if repl_factory is not None:
            sandbox_url = getattr(repl_factory, "wasm_service_url", None)
            if not isinstance(sandbox_url, str):
                raise TypeError(
                    "repl_factory must be a rlm.remote.RemoteREPLFactory (an object with a str wasm_service_url), "
                    f"not {type(repl_factory).__name__}"
                )
            executor = "remote"
        self.repl_factory = repl_factory
        _util.bridge_logs(verbose=enable_logging)
        self._engine = _util.engine(
            self.model,
            self.recursive_models,
            self.base_url,
            key,
            max_iterations=self.max_iterations,
            max_depth=max(self.max_depth - self.current_depth, 0),
            executor=executor,
            sandbox_url=sandbox_url,
            log_steps=enable_logging,
            sub_base_url=self.recursive_base_url,
        )
        self._results: List[RLMResult] = []

    def completion_result(self, context: Any, query: Optional[str] = None) -> RLMResult:
        """Like :meth:`completion`, with the whole result: ``finished_by``, iterations, usage, trace path."""
        return self._run(context, query, None)

    def completion(self, context: Any, query: Optional[str] = None) -> str:
        """The answer to `query` over `context` (a str, a list of str, a dict, or a list of message dicts).

        Without `query`, the question is expected inside the context. Ctrl-C stops the run and raises
        ``KeyboardInterrupt``; failures raise :class:`rlm.errors.RlmError` subclasses.
        """
        return self._run(context, query, None).answer

    async def acompletion_result(self, context: Any, query: Optional[str] = None) -> RLMResult:
        """:meth:`completion_result` for asyncio: runs on a worker thread; cancelling the task cancels the run."""
        token = _rlm.CancelToken()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, functools.partial(self._run, context, query, token))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            token.cancel()
            # Let the engine wind down (it stops at the next step) before the task reports cancelled.
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout=10)
            except BaseException:  # noqa: BLE001 - the run's own outcome no longer matters
                pass
            raise

    async def acompletion(self, context: Any, query: Optional[str] = None) -> str:
        """:meth:`completion` for asyncio."""
        return (await self.acompletion_result(context, query)).answer

    def _run(self, context: Any, query: Optional[str], token: Any) -> RLMResult:
        kind, text = _util.context_arg("context", context)
        if query is None:
            query = "Answer the question or follow the instructions contained in the context."
        _util.check_str("query", query, optional=False)
        if self.persistent:
            if self._conversation is None:
                self._conversation = _rlm.start_conversation(self._engine, kind, text)
            else:
                self._conversation.add_context(kind, text)
            result = RLMResult.from_json(self._conversation.ask(query, cancel=token))
        else:
            result = RLMResult.from_json(self._engine.completion(kind, text, query, cancel=token))
        self._results.append(result)
        return result

    def cost_summary(self) -> Dict[str, Any]:
        """Tokens used by the runs since construction (or :meth:`reset`): totals and per model."""
        totals: Dict[str, int] = {}
        by_model: Dict[str, Dict[str, int]] = {}
        for result in self._results:
            for name, value in (result.usage.get("total") or {}).items():
                if isinstance(value, (int, float)):
                    totals[name] = totals.get(name, 0) + value
            for model, usage in (result.usage.get("by_model") or {}).items():
                slot = by_model.setdefault(model, {})
                for name, value in (usage or {}).items():
                    if isinstance(value, (int, float)):
                        slot[name] = slot.get(name, 0) + value
        return {"runs": len(self._results), "total": totals, "by_model": by_model}

    def reset(self) -> None:
        """Forgets previous runs (their costs); with ``persistent=True`` the next completion starts a fresh REPL."""
        self._results.clear()
        conversation, self._conversation = self._conversation, None
        if conversation is not None:
            conversation.close()

