"""The abstract base of RLM implementations (the original's ``rlm.RLM``)."""

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional


class RLM(ABC):
    """An RLM answers a query over a context too large for one model call."""

    @abstractmethod
    def completion(self, context: Any, query: Optional[str] = None) -> str:
        """The answer to `query` over `context`."""

    @abstractmethod
    def cost_summary(self) -> Dict[str, Any]:
        """What the runs so far cost (tokens)."""

    @abstractmethod
    def reset(self) -> None:
        """Forgets the state of previous runs."""
