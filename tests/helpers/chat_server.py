"""A local server that speaks the chat-completions API, scripted per test.

The real describer/judge services are external and paid, so this is the one place a stand-in
is right: it runs the real HTTP path (httpx, status codes, headers, JSON bodies) on
127.0.0.1, records every request and counts how many were in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: `content` becomes choices[0].message.content; `body` (raw
    bytes/JSON) replaces the whole response body when given."""

    content: str | None = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    time: float


class ChatServer:
    """Answers POST /v1/chat/completions from `script` (a list, the last reply repeating, or
    a callable(body, index) -> Reply)."""

    def __init__(self) -> None:
        self.script: list[Reply] | Callable[[dict[str, Any], int], Reply] = [Reply()]
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _reply_for(self, body: dict[str, Any], index: int) -> Reply:
        if callable(self.script):
            return self.script(body, index)
        return self.script[min(index, len(self.script) - 1)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(Recorded(self.path, dict(self.headers), body, time.monotonic()))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server._reply_for(body, index)
                    if reply.delay:
                        time.sleep(reply.delay)
                    if self.path != "/v1/chat/completions":
                        reply = Reply(status=404, body={"error": {"message": f"no route {self.path}"}})
                    payload = reply.body
                    if payload is None:
                        payload = {
                            "id": f"chatcmpl-{index}",
                            "object": "chat.completion",
                            "model": body.get("model"),
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": reply.content},
                                }
                            ],
                        }
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                finally:
                    with server._lock:
                        server.in_flight -= 1
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
