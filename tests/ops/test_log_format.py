"""`cronhive.logs.JsonFormatter` in process: credentials scrubbed from any text, run ids
taken from a run message logged as an argument (Dramatiq's own lines) and from the
context providers a process registers."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from cronhive.logs import JsonFormatter, add_context_provider, remove_context_provider, scrub_credentials


def render(message: str, *args: Any, exc_info: Any = None, **extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("test", logging.ERROR, __file__, 1, message, args, exc_info)
    record.__dict__.update(extra)
    line = JsonFormatter().format(record)
    assert "\n" not in line  # one event, one line
    return json.loads(line)


@pytest.mark.parametrize("url, shown", [
    ("amqp://cron:pa55@rabbit:5672/%2F", "amqp://cron:***@rabbit:5672/%2F"),
    ("mongodb://admin:p%40ss:w0rd@m1:27017,m2:27017/?replicaSet=rs0", "mongodb://admin:***@m1:27017,m2:27017/?replicaSet=rs0"),
    ("mongodb+srv://u:pw@cluster0.example.net/db", "mongodb+srv://u:***@cluster0.example.net/db"),
    ("amqp://guest:***@localhost/%2F", "amqp://guest:***@localhost/%2F"),
    ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
    ("http://user@host/path", "http://user@host/path"),
])
def test_scrub_credentials(url: str, shown: str) -> None:
    assert scrub_credentials(f"connecting to {url} failed") == f"connecting to {shown} failed"


def test_a_password_in_a_message_an_argument_or_a_traceback_is_never_written() -> None:
    try:
        raise ConnectionError("cannot reach amqp://cron:hunter2@rabbit:5672/%2F")
    except ConnectionError:
        exc_info = sys.exc_info()
    event = render("connecting to %s", "mongodb://admin:hunter2@mongo:27017", exc_info=exc_info,
                   url="amqp://cron:hunter2@rabbit/%2F")
    assert "hunter2" not in json.dumps(event)
    assert event["event"] == "connecting to mongodb://admin:***@mongo:27017"
    assert event["url"] == "amqp://cron:***@rabbit/%2F"
    assert event["exc_type"] == "ConnectionError" and "amqp://cron:***@rabbit:5672" in event["exc"]


def test_dramatiqs_lines_about_a_run_message_carry_its_ids() -> None:
    message = dramatiq.Message(queue_name="cronhive.runs", actor_name="execute_run", args=("run_20260101_000000_ab12",),
                               kwargs={"job_id": "nightly"}, options={})
    event = render("Failed to process message %s with unhandled exception.", message)
    assert event["run_id"] == "run_20260101_000000_ab12" and event["job_id"] == "nightly"
    other = dramatiq.Message(queue_name="q", actor_name="something_else", args=("x",), kwargs={"job_id": "y"},
                             options={})
    assert "run_id" not in render("Failed to process message %s.", other)


@pytest.fixture
def provider() -> Iterator[dict[str, Any]]:
    fields: dict[str, Any] = {}

    def current() -> dict[str, Any]:
        return fields

    add_context_provider(current)
    try:
        yield fields
    finally:
        remove_context_provider(current)


def test_context_providers_add_the_current_attempt_and_extra_wins(provider: dict[str, Any]) -> None:
    assert "run_id" not in render("no attempt")
    provider.update(job_id="nightly", run_id="run_20260101_000000_ab12", worker="host:1", attempt=2)
    event = render("handler says hi")
    assert (event["job_id"], event["run_id"], event["worker"], event["attempt"]) == (
        "nightly", "run_20260101_000000_ab12", "host:1", 2)
    assert render("explicit", run_id="run_other")["run_id"] == "run_other"


def test_a_broken_provider_costs_no_log_line() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    add_context_provider(broken)
    try:
        assert render("still written")["event"] == "still written"
    finally:
        remove_context_provider(broken)
