"""JSON logs, one event a line, with ``job_id``/``run_id``/``term``/``worker`` when given.

Context fields come, in order of precedence, from the record's ``extra``, from
the context providers a process registers (`add_context_provider`: the worker
registers the attempt its thread runs, so a handler's own log lines carry the
ids) and from a run message among the record's arguments (Dramatiq's own lines
such as "Failed to process message execute_run(...)").

Credentials never reach the output: any ``scheme://user:password@`` in the
event text or a traceback is written ``scheme://user:***@`` (a safety net behind
`cronhive.settings.redact_url`, for URLs that libraries put in their messages),
any ``Bearer <token>`` ``Bearer ***``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("job_id", "run_id", "term", "worker", "holder", "attempt", "url", "job_ids", "run_ids", "counts")

#: The actor names of run messages (`cronhive.broker.RUN_ACTORS`; not imported, to keep
#: this module free of the broker's dependencies).
RUN_ACTORS = frozenset({"execute_run", "execute_run_next"})

#: ``scheme://user:password@`` — the password part is replaced.
_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@\"']*:)(?P<password>[^\s@/\"']*)@")
#: ``Bearer <token>`` (an Authorization header a library put in its message) — the token is replaced.
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[^\s\"',;]+", re.IGNORECASE)

ContextProvider = Callable[[], "Mapping[str, Any] | None"]
_providers: list[ContextProvider] = []
_providers_lock = threading.Lock()


def scrub_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` and the token of
    every ``Bearer <token>`` replaced by ``***``."""
    text = _CREDENTIALS.sub(lambda match: f"{match.group('head')}***@", text)
    return _BEARER.sub(lambda match: f"{match.group('head')}***", text)


def add_context_provider(provider: ContextProvider) -> None:
    """Register a callable returning context fields for the current thread (or None).
    Called for every log record; it must be cheap and must not log."""
    with _providers_lock:
        if provider not in _providers:
            _providers.append(provider)


def remove_context_provider(provider: ContextProvider) -> None:
    with _providers_lock:
        if provider in _providers:
            _providers.remove(provider)


def _message_context(record: logging.LogRecord) -> dict[str, Any]:
    """The ids of a run message passed as a log argument (Dramatiq logs messages so)."""
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        if getattr(arg, "actor_name", None) not in RUN_ACTORS:
            continue
        context: dict[str, Any] = {}
        message_args = getattr(arg, "args", None) or ()
        if message_args and isinstance(message_args[0], str):
            context["run_id"] = message_args[0]
        job_id = (getattr(arg, "kwargs", None) or {}).get("job_id")
        if isinstance(job_id, str) and job_id:
            context["job_id"] = job_id
        return context
    return {}


def _provided_context() -> dict[str, Any]:
    context: dict[str, Any] = {}
    for provider in list(_providers):
        try:
            fields = provider()
        except Exception:  # a broken provider must never cost a log line
            continue
        if fields:
            context.update({key: value for key, value in fields.items() if value is not None})
    return context


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub_credentials(record.getMessage()),
        }
        context = {**_message_context(record), **_provided_context()}
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is None:
                value = context.get(key)
            if value is not None:
                event[key] = scrub_credentials(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            event["exc_type"] = record.exc_info[0].__name__
            event["exc"] = scrub_credentials(self.formatException(record.exc_info))
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
