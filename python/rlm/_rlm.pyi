"""Type stubs of the Rust extension (crates/python). The public API is the Python package around it."""

from typing import List, Optional, Tuple

__version__: str
PYTHON_BUILD_VERSION: str

class CancelToken:
    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

class Engine:
    def __init__(
        self,
        *,
        model: str,
        sub_model: Optional[str] = None,
        depth_models: Optional[List[str]] = None,
        base_url: Optional[str] = None,
        sub_base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        max_iterations: int = 20,
        max_depth: int = 1,
        executor: str = "local",
        sandbox_url: Optional[str] = None,
        trace_dir: Optional[str] = None,
        trace: bool = True,
        timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        log_steps: bool = False,
        route: str = "rlm",
    ) -> None: ...
    def completion(self, context_kind: str, context: str, query: str, cancel: Optional[CancelToken] = None) -> str: ...
    def complete(self, prompt: str, model: Optional[str] = None) -> str: ...
    @property
    def model(self) -> str: ...

class Session:
    def run_cell(self, code: str) -> Tuple[str, str, Optional[str], float]: ...
    def variables(self) -> List[Tuple[str, str]]: ...
    def close(self) -> None: ...

def open_session(
    executor: str, context_kind: str, context: str, cell_timeout: float = 120.0, engine: Optional[Engine] = None
) -> Session: ...
def cli_main(argv: List[str]) -> int: ...
def install_log_bridge(level: int) -> bool: ...
