"""The rich result of a completion."""

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class RLMResult:
    """What :meth:`rlm.local.RLM_REPL.completion_result` returns; ``completion`` returns only ``answer``."""

    answer: str
    #: ``final``, ``final_var``, ``answer``, ``limit``, ``direct`` (``cancelled`` / ``error`` come as exceptions).
    finished_by: str
    iterations: int
    sub_calls: int
    #: Token usage: ``{"total": {...}, "by_model": {...}}`` as the engine reports it.
    usage: Dict[str, Any] = field(default_factory=dict)
    #: The JSONL trajectory of the run (``None`` when tracing is off).
    trace_path: Optional[str] = None
    run_id: str = ""
    duration_secs: float = 0.0
    #: Which limit ran out when ``finished_by == "limit"``.
    limit: Optional[str] = None
    error: Optional[str] = None
    #: ``rlm`` (the REPL loop) or ``direct`` (one call over the whole context).
    path: str = "rlm"

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RLMResult":
        return cls(
            answer=data.get("answer", ""),
            finished_by=data.get("finished_by", ""),
            iterations=int(data.get("iterations", 0)),
            sub_calls=int(data.get("sub_calls", 0)),
            usage=data.get("usage") or {},
            trace_path=data.get("trace"),
            run_id=str(data.get("run_id", "")),
            duration_secs=float(data.get("duration_secs", 0.0)),
            limit=data.get("limit"),
            error=data.get("error"),
            path=data.get("path", "rlm"),
        )

    @classmethod
    def from_json(cls, text: str) -> "RLMResult":
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        return self.answer
