"""A webhook endpoint for tests: an HTTP server on 127.0.0.1 in a thread of the test
process that records every POST (path, headers, body) and answers each path from a
script of statuses (then 200), optionally after a pause."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def verified(self, secret: str) -> dict[str, Any]:
        """The body, verified as a receiver does with the `standardwebhooks` library
        (raises WebhookVerificationError otherwise)."""
        parsed: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return parsed


@dataclass
class Receiver:
    port: int
    received: list[Received] = field(default_factory=list)
    # path -> the statuses to answer in turn (then 200); a status may be (code, headers)
    script: dict[str, list[Any]] = field(default_factory=dict)
    pause: dict[str, float] = field(default_factory=dict)  # path -> seconds before answering
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.at(path)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return self.at(path)

    def _answer(self, path: str) -> tuple[int, dict[str, str]]:
        with self.lock:
            queue = self.script.get(path) or []
            answer = queue.pop(0) if queue else 200
        if isinstance(answer, tuple):
            return int(answer[0]), dict(answer[1])
        return int(answer), {}


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            path = self.path
            with receiver.lock:
                receiver.received.append(
                    Received(path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            time.sleep(receiver.pause.get(path, 0.0))
            status, headers = receiver._answer(path)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the worker that asked is gone (a test killed it)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
