"""A local HTTP server for the tests of the ``http`` handler and of notifications: bound
to 127.0.0.1 on a free port (port 0, read back), it records every request and answers
what the test tells it to (a status per path, or hanging on purpose)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Hook:
    """What the server received, and how it answers."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    #: path → (status, body); anything else: 200 {"ok": true}
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    #: the next this many requests are held (never answered) until `release`
    hold: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook", host: str = HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [item for item in self.requests if path is None or item.path == path]

    def wait(self, count: int, path: str | None = None, timeout_s: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{count} request(s) to {path or 'any path'} not received in {timeout_s} s: "
                             f"{self.received()}")

    def release(self) -> None:
        self.released.set()


def _handler(hook: Hook) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with hook.lock:
                hook.requests.append(Received(self.command, self.path, dict(self.headers), body))
                held = hook.hold > 0
                if held:
                    hook.hold -= 1
            if held:
                hook.released.wait(60)
                self.close_connection = True
                return
            status, payload = hook.routes.get(self.path.split("?")[0], (200, b'{"ok": true}'))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

    return Handler


@contextmanager
def serve() -> Iterator[Hook]:
    """A running server on 127.0.0.1 (a free port) for the ``with`` block."""
    hook = Hook()
    httpd = http.server.ThreadingHTTPServer((HOST, 0), _handler(hook))
    httpd.daemon_threads = True
    hook.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.release()
        httpd.shutdown()
        httpd.server_close()
