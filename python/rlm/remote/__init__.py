"""Model code in a sandbox service (``python -m rlm.wasm.repl_wasm_service`` or ``rlm sandbox serve``).

``RLM_REPL(..., repl_factory=RemoteREPLFactory(wasm_service_url=URL))`` runs the model's code in the service through
the Rust remote executor (sessions, contexts uploaded once, sub-calls coming back to this process). ``RemoteREPLEnv``
speaks the service's simple ``/execute`` endpoint, as the original client did.
"""

import json
import os
import ssl
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .. import _util
from ..local.repl import REPLResult

DEFAULT_SERVICE_URL = "http://wasm-repl-service:8000"

#: Seconds a health or readiness probe may take.
PROBE_TIMEOUT = 5.0


def _service_url(url: Any) -> str:
    chosen = _util.check_str("wasm_service_url", url) or os.environ.get("WASM_SERVICE_URL") or DEFAULT_SERVICE_URL
    if not chosen.startswith(("http://", "https://")):
        raise ValueError(f"wasm_service_url must be an http:// or https:// URL, not {chosen!r}")
    return chosen.rstrip("/")


@dataclass
class RemoteExecutionConfig:
    """How to reach the service. ``timeout`` is per request, in seconds (cells get ``timeout - 5``)."""

    wasm_service_url: str
    timeout: float = 35
    max_retries: int = 3
    retry_backoff: float = 0.5
    verify_ssl: bool = True

    def __post_init__(self) -> None:
        self.wasm_service_url = _service_url(self.wasm_service_url)
        _util.check_number("timeout", self.timeout, 6)
        _util.check_int("max_retries", self.max_retries, 0)
        _util.check_number("retry_backoff", self.retry_backoff, 0)


def _ssl_context(verify: bool) -> Optional[ssl.SSLContext]:
    if verify:
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class RemoteREPLEnv:
    """A REPL whose code runs in the sandbox service; variables travel with each request (``/execute``)."""

    def __init__(
        self,
        wasm_service_url: Optional[str] = None,
        config: Optional[RemoteExecutionConfig] = None,
        recursive_models: Optional[List[str]] = None,
        recursive_base_urls: Optional[List[str]] = None,
        api_key: Optional[str] = None,
        context_json: Any = None,
        context_str: Optional[str] = None,
        setup_code: Optional[str] = None,
        max_depth: int = 1,
        current_depth: int = 0,
    ) -> None:
        if config is not None and not isinstance(config, RemoteExecutionConfig):
            raise TypeError(f"config must be a RemoteExecutionConfig or None, not {type(config).__name__}")
        self.config = config or RemoteExecutionConfig(wasm_service_url=_service_url(wasm_service_url))
        self.wasm_service_url = self.config.wasm_service_url
        self.recursive_models = _util.check_str_list("recursive_models", recursive_models)
        self.recursive_base_urls = _util.check_str_list("recursive_base_urls", recursive_base_urls)
        self.api_key = _util.check_str("api_key", api_key)
        self.max_depth = _util.check_int("max_depth", max_depth, 0)
        self.current_depth = _util.check_int("current_depth", current_depth, 0)
        self.session_id = str(uuid.uuid4())
        self.variables: Dict[str, Any] = {}
        if context_json is not None:
            self.variables["context"] = context_json
        if context_str is not None:
            self.variables["context_str"] = _util.check_str("context_str", context_str)
        if setup_code:
            self.code_execution(_util.check_str("setup_code", setup_code) or "")

    def _post(self, body: Dict[str, Any]) -> Dict[str, Any]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.wasm_service_url}/execute", data=data, headers={"Content-Type": "application/json"}
        )
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(
                    request, timeout=self.config.timeout, context=_ssl_context(self.config.verify_ssl)
                ) as response:
                    return json.loads(response.read().decode() or "{}")
            except urllib.error.HTTPError as err:
                text = err.read().decode(errors="replace")
                raise RuntimeError(f"HTTP {err.code} from {self.wasm_service_url}/execute: {text}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                if attempt >= self.config.max_retries:
                    raise RuntimeError(f"cannot reach {self.wasm_service_url}: {err}") from None
                time.sleep(self.config.retry_backoff * (2**attempt))
                attempt += 1

    def code_execution(self, code: str) -> REPLResult:
        """Runs `code` in the service with the current variables; failures are reported in ``stderr``."""
        _util.check_str("code", code, optional=False)
        started = time.perf_counter()
        body = {
            "code": code,
            "context": self.variables,
            "timeout": max(self.config.timeout - 5, 1),
            "session_id": self.session_id,
        }
        try:
            response = self._post(body)
        except RuntimeError as err:
            return REPLResult(stdout="", stderr=str(err), locals=self.variables.copy(),
                              execution_time=time.perf_counter() - started)
        self.variables.update(response.get("locals") or {})
        stderr = response.get("stderr") or ""
        error = response.get("error")
        if error and error not in stderr:
            # Services that report the exception apart from stderr: the caller reads stderr, as in the original.
            stderr = f"{stderr}{error}"
        return REPLResult(
            stdout=response.get("stdout", ""),
            stderr=stderr,
            locals=self.variables.copy(),
            execution_time=float(response.get("execution_time", time.perf_counter() - started)),
        )


class RemoteREPLFactory:
    """Makes :class:`RemoteREPLEnv` s for one service, and checks that it is up."""

    def __init__(self, wasm_service_url: Optional[str] = None) -> None:
        self.wasm_service_url = _service_url(wasm_service_url)

    def create(self, max_depth: int = 1, current_depth: int = 0, **kwargs: Any) -> RemoteREPLEnv:
        kwargs.setdefault("wasm_service_url", self.wasm_service_url)
        return RemoteREPLEnv(max_depth=max_depth, current_depth=current_depth, **kwargs)

    def _probe(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.wasm_service_url}{path}", timeout=PROBE_TIMEOUT) as response:
                return response.status == 200
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return False

    def health_check(self) -> bool:
        """True when the service answers ``GET /health`` with 200."""
        return self._probe("/health")

    def readiness_check(self) -> bool:
        """True when the service answers ``GET /ready`` with 200 (it can take sessions)."""
        return self._probe("/ready")


__all__ = ["RemoteExecutionConfig", "RemoteREPLEnv", "RemoteREPLFactory"]
