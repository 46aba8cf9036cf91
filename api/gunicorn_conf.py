"""gunicorn settings for the API: threads for I/O waits, JSON access logs off
(the app logs), gunicorn's own refusals in the API's one error shape, and closing
the app's clients when a worker exits.

gunicorn answers some requests before the app sees them: a request line longer
than `limit_request_line` (414), more than `limit_request_fields` headers or one
longer than `limit_request_field_size` (431), a malformed request line, method,
version or header (400), an unsupported transfer coding (501). Out of the box it
answers those with an HTML page; `json_error` replaces that page, in every worker
(`post_worker_init`), by ``{"error": {"code", "message", "details"}}`` with a
fixed message per status — never the offending input or an exception text.
"""

from __future__ import annotations

import json
from typing import Any

# chosen by measurement (bench/README.md, "The API under load"): gthread keeps
# connections alive and overlaps the MongoDB waits; API_WORKERS processes (2, one
# per core) × 4 threads. Sync workers (2-8) and more processes were no faster; 8
# threads served an API-bound mix ~7 % faster (within the noise) but put all 16
# clients' queries on the store at once, raising the full mix's p99 by ~25 % —
# on SecantusDB the store, not gunicorn, bounds the full mix
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"

# gunicorn's defaults, stated: the limits `json_error`'s messages name
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

#: status -> (code, message) of the errors gunicorn raises itself
GUNICORN_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is not valid HTTP/1.1 (request line, method, version or a header)."),
    403: ("forbidden", "The request is forbidden."),
    414: ("uri_too_long", f"The request line (method, path and query) is longer than {limit_request_line} bytes."),
    417: ("expectation_failed", "The Expect header is not supported; send the body at once."),
    431: ("request_header_fields_too_large",
          f"Too many request headers (at most {limit_request_fields}) or one longer than "
          f"{limit_request_field_size} bytes."),
    500: ("internal_error", "Internal error."),
    501: ("not_implemented", "The request's transfer coding is not supported."),
}


def json_error_body(status: int, reason: str) -> bytes:
    """The one error shape for a status gunicorn answers itself."""
    code, message = GUNICORN_ERRORS.get(status, ("http_error", reason or "HTTP error."))
    return json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()


def json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for ``gunicorn.util.write_error`` (same arguments): a JSON answer, then
    gunicorn closes the connection. ``mesg`` — gunicorn's text, which echoes the
    request or an exception — is deliberately not sent."""
    from gunicorn import util

    body = json_error_body(status_int, reason)
    head = (f"HTTP/1.1 {status_int} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def post_worker_init(worker: Any) -> None:
    """In each worker, before it serves: gunicorn's error pages become `json_error`.
    (gunicorn's worker calls ``util.write_error`` for every error it answers itself.)"""
    from gunicorn import util

    util.write_error = json_error


def worker_exit(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions") and "cronhive" in app.extensions:
        from cronhive.api.app import close_app

        close_app(app)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped in prometheus_client


def _json_logger_class() -> type:
    """gunicorn's own log lines (worker timeouts, crashed workers) as JSON too."""
    from gunicorn.glogging import Logger

    from cronhive.logs import JsonFormatter

    class JsonLogger(Logger):  # type: ignore[misc]  # gunicorn publishes no types
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(JsonFormatter())

    return JsonLogger


logger_class = _json_logger_class()
