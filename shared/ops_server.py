"""The health and metrics endpoints of the scheduler and worker processes:
``GET /healthz`` (alive), ``GET /readyz`` (MongoDB and RabbitMQ reachable, else
503) and ``GET /metrics`` (Prometheus text), on ``METRICS_HOST:METRICS_PORT``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pika

from cronhive.broker import amqp_url
from cronhive.errors import BrokerUnavailable, Unavailable
from cronhive.metrics import exposition
from cronhive.settings import Settings, redact_url

if TYPE_CHECKING:
    from cronhive.store import MongoStore

log = logging.getLogger("cronhive.ops")

Check = Callable[[], None]


def rabbitmq_check(settings: Settings) -> None:
    """Open and close one AMQP connection (a probe thread keeps no connection);
    `BrokerUnavailable` naming the redacted URL when that fails."""
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url(settings.rabbitmq_url))).close()
    except Exception as exc:  # any failure here means: not reachable
        raise BrokerUnavailable(f"RabbitMQ is unreachable at {redact_url(settings.rabbitmq_url)}: "
                                f"{type(exc).__name__}") from None


def readiness_checks(settings: Settings, store: MongoStore) -> dict[str, Check]:
    """The ``/readyz`` checks of a scheduler or worker: MongoDB and RabbitMQ reachable."""
    return {"mongodb": store.ping, "rabbitmq": lambda: rabbitmq_check(settings)}


def run_checks(checks: Mapping[str, Check]) -> tuple[bool, dict[str, str]]:
    """Run each readiness check; a check raises `Unavailable` when its dependency is down."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Unavailable as exc:
            results[name] = exc.message
    return all(value == "ok" for value in results.values()), results


class OpsServer:
    """A small threaded HTTP server in a daemon thread. Port 0 in settings = no server."""

    def __init__(self, host: str, port: int, checks: Mapping[str, Check]) -> None:
        self.host = host
        self.port = port
        self.checks = dict(checks)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OpsServer:
        if self.port == 0:
            return self
        checks = self.checks

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, "application/json", json.dumps({"status": "ok"}).encode())
                elif path == "/readyz":
                    ready, results = run_checks(checks)
                    body = json.dumps({"status": "ready" if ready else "unavailable", "checks": results}).encode()
                    self._send(200 if ready else 503, "application/json", body)
                elif path == "/metrics":
                    body, content_type = exposition()
                    self._send(200, content_type, body)
                else:
                    self._send(404, "application/json", json.dumps({"error": {"code": "not_found", "message": "Not found.", "details": {}}}).encode())

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-server", daemon=True)
        self._thread.start()
        log.info("health and metrics on http://%s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
