"""Argument checks, environment defaults and context conversion shared by the package's classes."""

import json
import logging
import os
from typing import Any, List, Optional, Sequence, Tuple

from . import _rlm

DEFAULT_MODEL = "gpt-5"
DEFAULT_RECURSIVE_MODEL = "gpt-5-mini"

_log = logging.getLogger("rlm")


def env(*names: str) -> Optional[str]:
    """The first of the environment variables `names` that is set and not blank."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def check_str(name: str, value: Any, optional: bool = True) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str{' or None' if optional else ''}, not {type(value).__name__}")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def check_number(name: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not value >= minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return float(value)


def check_str_list(name: str, value: Any) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of str or None, not {type(value).__name__}")
    return list(value)


def api_key(value: Any) -> Optional[str]:
    """The key: the argument, else OPENAI_API_KEY, else LLM_API_KEY (the original's order)."""
    return check_str("api_key", value) or env("OPENAI_API_KEY", "LLM_API_KEY")


def recursive_settings(
    recursive_models: Any, recursive_base_urls: Any, base_url: Optional[str]
) -> Tuple[List[str], Optional[str]]:
    """The sub-models (per depth) and their base URL, with the original's environment defaults: the first of
    `recursive_base_urls`, else ``LLM_RECURSIVE_BASE_URL``, else the root model's."""
    models = check_str_list("recursive_models", recursive_models) or [
        env("LLM_RECURSIVE_MODEL") or DEFAULT_RECURSIVE_MODEL
    ]
    urls = check_str_list("recursive_base_urls", recursive_base_urls) or [
        u for u in [env("LLM_RECURSIVE_BASE_URL") or base_url or env("LLM_BASE_URL")] if u
    ]
    if len({u.rstrip("/") for u in urls}) > 1:
        # The sub-model of every depth is one model at one endpoint here (see docs/python.md).
        _log.warning("rlm: sub-models use the first of recursive_base_urls %r", urls)
    return models, (urls[0] if urls else None)


def context_arg(name: str, value: Any) -> Tuple[str, str]:
    """A context as the extension takes it: ("text", str) or ("json", JSON text)."""
    if isinstance(value, str):
        return "text", value
    if isinstance(value, (list, tuple, dict)):
        try:
            return "json", json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be JSON-serialisable (str, list, dict of plain values): {err}") from None
    raise TypeError(f"{name} must be a str, list or dict, not {type(value).__name__}")


def engine(
    model: str,
    sub_models: Sequence[str],
    base_url: Optional[str],
    key: Optional[str],
    max_iterations: int = 20,
    max_depth: int = 1,
    executor: str = "local",
    sandbox_url: Optional[str] = None,
    trace: bool = True,
    log_steps: bool = False,
    sub_base_url: Optional[str] = None,
) -> Any:
    depth_models = [model, *sub_models] if len(sub_models) > 1 else None
    return _rlm.Engine(
        model=model,
        sub_model=sub_models[0] if sub_models else None,
        depth_models=depth_models,
        base_url=base_url or env("LLM_BASE_URL"),
        sub_base_url=sub_base_url,
        api_key=key,
        max_iterations=max_iterations,
        max_depth=max_depth,
        executor=executor,
        sandbox_url=sandbox_url,
        trace_dir=env("RLM_TRACE_DIR"),
        trace=trace,
        log_steps=log_steps,
    )


def bridge_logs(verbose: bool = False) -> None:
    """Routes the engine's log events to Python's `logging` (logger ``rlm``). With `verbose` (the original's
    ``enable_logging``), the ``rlm`` logger shows INFO on stderr unless the application configured it already."""
    logger = logging.getLogger("rlm")
    if verbose:
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    _rlm.install_log_bridge(max(logger.getEffectiveLevel(), logging.DEBUG))
