"""A slot run's message carrying its job's snapshot (`cronhive.snapshots`): the worker
starts it without reading anything, and falls back to reading the run and the job
whenever either is no longer as published — the job changed, deleted or re-created,
the run cancelled or already started, the message redelivered or its snapshot
unusable. Against the real store, the clock moved by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from cronhive.broker import run_message
from cronhive.domain import RunError
from cronhive.enums import ErrorType
from cronhive.settings import Settings
from cronhive.snapshots import SNAPSHOT_OPTION
from cronhive.store import MongoStore
from cronhive.worker.middleware import RunLifecycle
from tests.services import CommandCounter
from tests.worker.conftest import Harness

#: the commands that read documents
READS = {"find", "aggregate", "count", "findAndModify"}


@pytest.fixture
def counted(harness: Harness, settings: Settings) -> Iterator[tuple[RunLifecycle, CommandCounter]]:
    """A second lifecycle over its own client, whose commands are counted."""
    commands = CommandCounter()
    store = MongoStore.open(Settings.from_env({"MONGODB_URI": harness.store.uri,
                                               "MONGODB_DB": harness.store.db.name}), event_listeners=[commands])
    lifecycle = RunLifecycle(store, harness.clock, harness.settings, harness.keeper, worker="testhost:4242")
    yield lifecycle, commands
    store.close()


def test_a_slot_run_with_its_snapshot_starts_and_ends_in_four_writes_and_no_read(
        harness: Harness, counted: tuple[RunLifecycle, CommandCounter]) -> None:
    lifecycle, commands = counted
    harness.job("report", handler="noop", args={"to": "ops"}, timeout_s=30, max_retries=2)
    run_id, message = harness.slot("report")
    reserved = harness.job_doc("report")["lease"]
    harness.clock.advance(0.25)
    commands.take()

    delivery = harness.deliver_message(message, lifecycle=lifecycle)
    attempt = delivery.begin()
    assert commands.take() == ["update", "update"]  # the claim, the start: nothing read
    assert attempt is not None and attempt.number == 1 and attempt.token == reserved["token"] + 1
    assert (attempt.handler, attempt.args, attempt.timeout_s, attempt.max_retries) == ("noop", {"to": "ops"}, 30, 2)
    run = harness.run(run_id)
    assert run["status"] == "running" and run["attempt"] == 1 and run["lease_token"] == attempt.token
    assert run["lateness_ms"] == 250 and run["worker"] == "testhost:4242"
    assert harness.job_doc("report")["lease"]["holder"] == attempt.lease.holder

    harness.clock.advance(1)
    delivery.end(result={"sent": 3})
    assert commands.take() == ["update", "update"]  # the run's outcome, the job's outcome + release
    run = harness.run(run_id)
    assert run["status"] == "succeeded" and run["output_json"] == '{"sent":3}'
    job = harness.job_doc("report")
    assert job["lease"] is None and (job["last_run_id"], job["last_run_status"]) == (run_id, "succeeded")


def test_a_job_changed_after_the_publish_runs_as_it_is_now(harness: Harness,
                                                          counted: tuple[RunLifecycle, CommandCounter]) -> None:
    lifecycle, commands = counted
    harness.job("report", handler="noop", args={"v": 1})
    run_id, message = harness.slot("report")
    harness.store.update_job("report", {"args": {"v": 2}, "timeout_s": 5}, harness.clock.now())
    commands.take()

    attempt = harness.deliver_message(message, lifecycle=lifecycle).begin()
    assert attempt is not None and attempt.args == {"v": 2} and attempt.timeout_s == 5
    assert READS & set(commands.take())  # the claim did not apply: the run and the job were read
    assert harness.run(run_id)["status"] == "running"


def test_a_job_deleted_or_recreated_after_the_publish_is_never_touched(harness: Harness) -> None:
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report")
    harness.store.delete_job("report", harness.clock.now())
    fresh = harness.job("report", handler="noop")  # the same id, another incarnation

    assert harness.deliver_message(message).begin() is None
    job = harness.job_doc("report")
    assert job["incarnation"] == fresh.incarnation and job.get("lease") is None and job.get("last_run_id") is None
    assert harness.store.runs.find_one({"_id": run_id}) is None  # deleted with its job


def test_a_run_cancelled_before_its_delivery_never_starts(harness: Harness) -> None:
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report")
    run = harness.store.get_run(run_id)
    assert harness.store.cancel_unstarted_run(run, RunError(ErrorType.CANCELLED, "test"), harness.clock.now())

    assert harness.deliver_message(message).begin() is None
    assert harness.run(run_id)["status"] == "cancelled" and harness.run(run_id)["attempt"] == 0
    lease = harness.job_doc("report")["lease"]
    assert lease is None or lease["holder"].startswith("run:")  # no attempt holds it


def test_a_second_delivery_of_the_same_snapshot_is_acknowledged_while_the_first_runs(harness: Harness) -> None:
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report")
    first = harness.deliver_message(message).begin()
    assert first is not None

    assert harness.deliver_message(message).begin() is None  # a duplicate publish
    redelivered = harness.deliver_message(message, redelivered=True)
    assert redelivered.begin() is None  # follows the live attempt: waits, re-published without the snapshot
    assert [p.message.options.get(SNAPSHOT_OPTION) for p in harness.broker.take()] == [None]
    run = harness.run(run_id)
    assert run["attempt"] == 1 and run["lease_token"] == first.token


def test_a_snapshot_the_worker_cannot_use_makes_it_read(harness: Harness,
                                                        counted: tuple[RunLifecycle, CommandCounter]) -> None:
    lifecycle, commands = counted
    harness.job("report", handler="noop", args={"v": 1})
    _run_id, message = harness.slot("report")
    broken = dict(message.options[SNAPSHOT_OPTION], token="seven")
    commands.take()

    attempt = harness.deliver_message(message.copy(options={SNAPSHOT_OPTION: broken}), lifecycle=lifecycle).begin()
    assert attempt is not None and attempt.args == {"v": 1}
    assert READS & set(commands.take())


def test_a_stale_snapshot_of_a_reservation_that_expired_and_was_taken_does_not_start(harness: Harness) -> None:
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report")
    harness.clock.advance(10)  # the reservation expired: the next slot's run takes the job's lease
    _later_id, later = harness.slot("report", harness.clock.now())

    assert harness.deliver_message(message).begin() is None  # forbid: skipped, its lease is another run's
    assert harness.run(run_id)["status"] == "skipped"
    assert harness.deliver_message(later).begin() is not None


def test_the_message_without_a_snapshot_is_the_one_it_always_was() -> None:
    message = run_message("q", "run_1", "job_1")
    assert message.options == {} and message.args == ("run_1",) and message.kwargs == {"job_id": "job_1"}


def test_a_slot_run_delivered_before_its_slot_waits_for_it(harness: Harness) -> None:
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report", harness.clock.now() + timedelta(seconds=2))

    assert harness.deliver_message(message).begin() is None  # never started before its slot
    (waiting,) = harness.broker.take()
    assert waiting.message.args == (run_id,) and 0 < (waiting.delay or 0) <= 2100  # at most a third of a lease
    assert harness.run(run_id)["status"] == "queued" and harness.run(run_id)["attempt"] == 0

    harness.clock.advance(1)
    assert harness.deliver_message(waiting.message).begin() is None  # still early: waits again
    (again,) = harness.broker.take()
    harness.clock.advance(1)
    assert harness.deliver_message(again.message).begin() is not None
