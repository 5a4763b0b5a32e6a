"""A scripted OpenAI-compatible model server for the tests (stdlib only): answers chat completions from a list."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Union

Reply = Union[str, Callable[[Dict[str, Any]], str]]


class ScriptedServer:
    """Replies in order; past the end it repeats `default`. `delay` seconds before each reply."""

    def __init__(self, replies: Optional[List[Reply]] = None, default: str = "FINAL(done)", delay: float = 0.0):
        self.replies = list(replies or [])
        self.default = default
        self.delay = delay
        self.requests: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out as two writes: without this, Nagle's algorithm and delayed ACKs add ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a cancelled run): nothing to report

            def do_GET(self) -> None:
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                text = server.next_reply(request)
                if server.delay:
                    time.sleep(server.delay)
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request.get("model", "scripted"),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def next_reply(self, request: Dict[str, Any]) -> str:
        with self._lock:
            self.requests.append(request)
            reply: Reply = self.replies.pop(0) if self.replies else self.default
        return reply(request) if callable(reply) else reply

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    import sys

    # `python scripted_server.py PORT REPLY...`: serve from the command line (the benchmark runs the CLI against it).
    with ScriptedServer(sys.argv[2:]) as s:
        print(s.url, flush=True)
        threading.Event().wait()
