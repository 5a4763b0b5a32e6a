"""rlm: Recursive Language Models, with the engine in Rust.

The original package's API: ``rlm.local.RLM_REPL(...).completion(context, query)``, ``rlm.remote`` for a sandbox
service, ``rlm.wasm`` for an in-process WebAssembly sandbox. See docs/python.md.
"""

from . import errors
from ._rlm import __version__
from .errors import (
    CancelledError,
    ConfigurationError,
    ModelError,
    RlmError,
    RunError,
    SandboxConnectionError,
    SandboxError,
)
from .local import REPLEnv as LocalREPLEnv
from .local import REPLResult
from .local import RLM_REPL as LocalRLM_REPL
from .remote import RemoteExecutionConfig, RemoteREPLEnv, RemoteREPLFactory
from .result import RLMResult
from .rlm import RLM
from .wasm import WASMREPLEnv, WASMREPLExecutor, WASMResult

__all__ = [
    "RLM",
    "RLMResult",
    "REPLResult",
    "LocalREPLEnv",
    "LocalRLM_REPL",
    "RemoteREPLEnv",
    "RemoteREPLFactory",
    "RemoteExecutionConfig",
    "WASMREPLExecutor",
    "WASMResult",
    "WASMREPLEnv",
    "RlmError",
    "ConfigurationError",
    "ModelError",
    "SandboxError",
    "SandboxConnectionError",
    "RunError",
    "CancelledError",
    "errors",
    "__version__",
]
