"""The local RLM: model code runs in this Python interpreter (trusted use only; see ``rlm.wasm`` for a sandbox)."""

from .repl import REPLEnv, REPLResult, Sub_RLM
from .rlm_repl import RLM_REPL

__all__ = ["RLM_REPL", "REPLEnv", "REPLResult", "Sub_RLM"]
