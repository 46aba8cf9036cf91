"""gunicorn settings for the API: threads for I/O waits, JSON access logs off
(the app logs), and closing the app's clients when a worker exits."""

from __future__ import annotations

from typing import Any

worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"


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
