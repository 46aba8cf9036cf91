"""JSON logs, one event a line, with ``job_id``/``run_id``/``term``/``worker`` when given."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

CONTEXT_FIELDS = ("job_id", "run_id", "term", "worker", "holder", "attempt", "url")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                event[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            event["exc_type"] = record.exc_info[0].__name__
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.handlers[:] = [handler]
    root.setLevel(level)
    # pika logs every failed connection attempt with a traceback; cronhive logs
    # one clear line of its own when RabbitMQ is unreachable.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
