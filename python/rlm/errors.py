"""Exceptions raised by rlm. All derive from :class:`RlmError`."""

import json
from typing import Any, Optional


class RlmError(Exception):
    """Base class of rlm's errors. When a run failed, ``result`` is its :class:`rlm.RLMResult` (trace path, usage)."""

    result_json: Optional[str] = None

    @property
    def result(self) -> Optional[Any]:
        if not self.result_json:
            return None
        from .result import RLMResult

        return RLMResult.from_dict(json.loads(self.result_json))


class ConfigurationError(RlmError, ValueError):
    """Settings that cannot work: no model, no API key and no base URL, a bad URL, an unknown executor.

    A ``ValueError`` too, as the original package raised ``ValueError`` for a missing key."""


class ModelError(RlmError):
    """The model provider failed or could not be reached."""


class SandboxError(RlmError):
    """The REPL (local interpreter, WebAssembly sandbox or sandbox service) failed, not the code in it."""


class SandboxConnectionError(SandboxError, ConnectionError):
    """The sandbox service could not be reached."""


class RunError(RlmError):
    """A run ended without an answer for another reason (a limit ran out and no answer was accepted)."""


class CancelledError(RunError):
    """The run was cancelled (``acompletion`` task cancelled)."""


__all__ = [
    "RlmError",
    "ConfigurationError",
    "ModelError",
    "SandboxError",
    "SandboxConnectionError",
    "RunError",
    "CancelledError",
]
