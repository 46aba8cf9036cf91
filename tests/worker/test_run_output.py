"""Run output and log (issue 12, item 3), through `RunLifecycle` in process against the
real store: the handler's return value and what it logs through ``ctx.logger`` are
written in the update that records the attempt's outcome — no extra MongoDB command."""

from __future__ import annotations

import json
import logging

from pymongo import monitoring

from cronhive.domain import MAX_LOG_BYTES, MAX_OUTPUT_BYTES
from cronhive.handlers import HandlerFailed
from cronhive.http_calls import UnexpectedStatus
from cronhive.run_output import LogCapture, bounded_output
from cronhive.store import MongoStore
from cronhive.worker.keeper import LeaseKeeper
from cronhive.worker.middleware import RunLifecycle
from tests.worker.conftest import LEASE_S, Harness

HANDLER_LOG = logging.getLogger("cronhive.handler")


def test_a_return_value_and_the_lines_logged_are_the_runs_output_and_log(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    delivery = harness.deliver(run_id)
    attempt = delivery.begin()
    assert attempt is not None
    ctx = attempt.context(HANDLER_LOG)
    ctx.logger.warning("scanned %d rows", 42)
    ctx.logger.error("one row is <b>bad</b>")
    delivery.end(result={"rows": 42, "tags": ("a", "b"), "nested": {"ok": True, "none": None}})

    run = harness.store.get_run(run_id)
    assert run.output.output == {"rows": 42, "tags": ["a", "b"], "nested": {"ok": True, "none": None}}
    assert run.output.truncated is False
    lines = (run.output.log or "").splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" WARNING scanned 42 rows") and lines[1].endswith(" ERROR one row is <b>bad</b>")
    assert lines[0][:4].isdigit() and "T" in lines[0].split()[0] and lines[0].split()[0].endswith("Z")
    doc = harness.run(run_id)
    assert isinstance(doc["output_json"], str)  # any JSON value is storable as its text


def test_json_values_mongodb_could_not_store_as_documents_are_kept(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    delivery = harness.deliver(run_id)
    delivery.begin()
    value = {"$set": 1, "a.b": [2**70, -1.5, "ü"]}
    delivery.end(result=value)
    assert harness.store.get_run(run_id).output.output == value


def test_a_run_that_returns_nothing_and_logs_nothing_keeps_no_output_fields(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    delivery = harness.deliver(run_id)
    delivery.begin()
    delivery.end(result=None)
    doc = harness.run(run_id)
    assert not {"output_json", "output_truncated", "log", "notifications", "notify_due"} & set(doc)
    run = harness.store.get_run(run_id)
    assert (run.output.output, run.output.truncated, run.output.log) == (None, False, None)


def test_a_failed_attempt_keeps_its_log_and_a_retry_starts_afresh(harness: Harness) -> None:
    harness.job("flaky", max_retries=1)
    run_id = harness.trigger("flaky").run_id
    first = harness.deliver(run_id)
    attempt = first.begin()
    assert attempt is not None
    attempt.context(HANDLER_LOG).logger.warning("first try")
    first.end(HandlerFailed("boom"))
    failed = harness.store.get_run(run_id)
    assert failed.status == "queued" and "first try" in (failed.output.log or "")

    harness.clock.advance(5)
    second = harness.deliver_message(harness.broker.take()[-1].message)
    attempt = second.begin()
    assert attempt is not None and attempt.number == 2
    assert not {"output_json", "log"} & set(harness.run(run_id))  # the first attempt's are cleared
    second.end(result="second output")
    run = harness.store.get_run(run_id)
    assert (run.status, run.output.output, run.output.log) == ("succeeded", "second output", None)


def test_an_http_error_records_its_type_and_the_response_as_output(harness: Harness) -> None:
    harness.job("call")
    run_id = harness.trigger("call").run_id
    delivery = harness.deliver(run_id)
    delivery.begin()
    response = {"status": 503, "headers": {"content-type": "text/plain"}, "body": "down"}
    delivery.end(UnexpectedStatus("POST http://x/ answered 503, expected 2xx", response))
    run = harness.store.get_run(run_id)
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "unexpected_status" and "answered 503" in run.error.message
    assert run.output.output == response


def test_a_value_that_is_not_json_is_kept_as_its_repr_and_the_run_succeeds(harness: Harness) -> None:
    harness.job("odd")
    run_id = harness.trigger("odd").run_id
    delivery = harness.deliver(run_id)
    delivery.begin()
    delivery.end(result={"when": {1, 2}})
    run = harness.store.get_run(run_id)
    assert run.status == "succeeded"
    assert run.output.output == {"unserializable": "dict", "repr": "{'when': {1, 2}}"}


def test_output_and_log_ride_on_the_outcomes_own_update(harness: Harness) -> None:
    """The same MongoDB commands record an attempt with output and log as one without."""

    class Commands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.names.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    listener = Commands()
    store = MongoStore.open(harness.settings, event_listeners=[listener])
    try:
        lifecycle = RunLifecycle(store, harness.clock, harness.settings, LeaseKeeper(store, harness.clock, LEASE_S),
                                 worker="testhost:4343")
        harness.lifecycle = lifecycle
        counts = []
        for index, result in enumerate((None, {"big": "x" * 1000})):
            harness.job(f"count_{index}")
            run_id = harness.trigger(f"count_{index}").run_id
            delivery = harness.deliver(run_id)
            attempt = delivery.begin()
            assert attempt is not None
            if result is not None:
                attempt.context(HANDLER_LOG).logger.warning("a line")
            listener.names.clear()
            delivery.end(result=result)
            counts.append(list(listener.names))
        assert counts[0] == counts[1] == ["update", "update"]  # the run's outcome, the job's outcome
        assert harness.store.get_run(run_id).output.log is not None
    finally:
        store.close()


# -- the bounds (cronhive.run_output) ------------------------------------------------


def test_an_output_over_64_kib_keeps_its_shape_with_its_longest_string_cut() -> None:
    value = {"status": 200, "body": "é" * MAX_OUTPUT_BYTES, "small": "kept"}
    output, truncated = bounded_output(value)
    assert truncated and output["status"] == 200 and output["small"] == "kept"
    assert output["body"].startswith("é" * 100) and output["body"].endswith("…")
    size = len(json.dumps(output, separators=(",", ":"), ensure_ascii=False).encode())
    assert MAX_OUTPUT_BYTES - 200 < size <= MAX_OUTPUT_BYTES


def test_an_output_that_cannot_keep_its_shape_becomes_its_json_text_cut() -> None:
    output, truncated = bounded_output(list(range(40_000)))
    assert truncated and isinstance(output, str) and output.startswith("[0,1,2,")
    assert len(output.encode()) <= MAX_OUTPUT_BYTES


def test_values_that_are_not_json() -> None:
    assert bounded_output(float("nan"))[0] == {"unserializable": "float", "repr": "nan"}
    assert bounded_output({1: "int key"})[0]["unserializable"] == "dict"
    long = bounded_output({"x": {1, 2}, "y": "z" * 5000})[0]
    assert long["unserializable"] == "dict" and len(long["repr"]) == 2000 and long["repr"].endswith("…")
    assert bounded_output(("a", 1)) == (["a", 1], False)
    assert bounded_output(None) == (None, False)


def test_the_log_keeps_its_last_64_kib_in_whole_lines() -> None:
    capture = LogCapture()
    logger = logging.Logger("t")
    logger.addHandler(capture)
    for index in range(2000):
        logger.warning("line %04d %s", index, "x" * 100)
    text = capture.text()
    assert text is not None and len(text.encode()) <= MAX_LOG_BYTES
    lines = text.splitlines()
    assert lines[-1].split()[2:4] == ["line", "1999"] and all(" WARNING line " in line for line in lines)
    assert len(text.encode()) > MAX_LOG_BYTES - 200


def test_lone_surrogates_in_output_and_log_are_stored_as_replacement_characters(harness: Harness) -> None:
    harness.job("odd_text")
    run_id = harness.trigger("odd_text").run_id
    delivery = harness.deliver(run_id)
    attempt = delivery.begin()
    assert attempt is not None
    attempt.context(HANDLER_LOG).logger.warning("bad \udc80 byte")
    delivery.end(result={"k\ud800": "v\udfff"})
    run = harness.store.get_run(run_id)
    assert run.status == "succeeded"
    assert run.output.output == {"k\ufffd": "v\ufffd"} and (run.output.log or "").endswith("bad \ufffd byte")
