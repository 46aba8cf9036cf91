"""`RunLifecycle` and the `LeaseKeeper` with cancelled runs and backfill runs, against the
real store, the clock moved by hand: a cancelled run never starts; a running one
asked to stop is interrupted, recorded ``cancelled`` (never retried) and frees the
lease; backfill runs under ``forbid`` wait for each other oldest first, never skipped.
(Real worker processes: tests/worker/test_cancel_processes.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cronhive.backfill import backfill_job
from cronhive.domain import RunError
from cronhive.enums import ErrorType, Reprocess
from cronhive.worker.attempts import RunCancelledInterrupt
from cronhive.worker.middleware import slot_queue_wait_ms
from cronhive.worker.records import HANDED_ON
from tests.worker.conftest import LEASE_S, Harness


def cancel_queued(harness: Harness, run_id: str) -> None:
    run = harness.store.get_run(run_id)
    assert harness.store.cancel_unstarted_run(run, RunError(ErrorType.CANCELLED, "test"), harness.clock.now())
    harness.store.release_reservation(run.job_id, run_id)


def test_a_cancelled_run_is_acknowledged_when_its_message_arrives(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    cancel_queued(harness, run_id)
    assert harness.job_doc("report")["lease"] is None
    assert harness.deliver(run_id).begin() is None  # never starts
    assert harness.broker.take() == []
    run = harness.run(run_id)
    assert run["status"] == "cancelled" and run["attempt"] == 0 and run["started_at"] is None


def test_a_running_attempt_asked_to_stop_is_interrupted_and_recorded_cancelled_without_retry(harness: Harness) -> None:
    harness.job("report", max_retries=3)
    run_id = harness.trigger("report").run_id
    delivery = harness.deliver(run_id)
    attempt = delivery.begin()
    assert attempt is not None
    assert harness.keeper.check_cancels() == []  # nothing asked yet

    assert harness.store.request_cancel(harness.store.get_run(run_id), harness.clock.now())
    assert harness.keeper.check_cancels() == [attempt] and attempt.cancelled
    assert harness.keeper.check_cancels() == []  # asked once
    delivery.end(RunCancelledInterrupt())  # what the interrupted handler raises

    run = harness.run(run_id)
    assert run["status"] == "cancelled" and run["error"]["type"] == "cancelled" and run["attempt"] == 1
    assert run["finished_at"] is not None and [a["status"] for a in run["attempts"]] == ["cancelled"]
    assert harness.broker.take() == []  # no retry published
    assert not delivery.failed  # not dead-lettered
    job = harness.job_doc("report")
    assert job["lease"] is None and job["last_run_status"] == "cancelled"


def test_a_cancel_that_lands_before_the_handler_starts_stops_it_there(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    attempt = harness.deliver(run_id).begin()
    assert attempt is not None
    harness.store.request_cancel(harness.store.get_run(run_id), harness.clock.now())
    harness.keeper.check_cancels()
    try:
        with harness.keeper.handler_running(attempt):
            raise AssertionError("the handler must not be called")
    except RunCancelledInterrupt:
        pass


def test_a_cancel_requested_for_a_dead_attempt_records_it_cancelled_not_retried(harness: Harness) -> None:
    harness.job("report", max_retries=2)
    run_id = harness.trigger("report").run_id
    assert harness.deliver(run_id).begin() is not None  # this worker then dies
    harness.store.request_cancel(harness.store.get_run(run_id), harness.clock.now())
    harness.clock.advance(LEASE_S + 1)
    assert harness.deliver(run_id, redelivered=True).begin() is None
    run = harness.run(run_id)
    assert run["status"] == "cancelled" and run["attempt"] == 1
    assert harness.job_doc("report")["lease"] is None


# -- backfill runs under forbid ---------------------------------------------------------


def test_backfill_runs_under_forbid_run_one_after_another_oldest_first_and_none_is_skipped(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.job("daily", schedule="0 6 * * *", overlap_policy="forbid")
    start = datetime(2026, 2, 1, tzinfo=UTC)
    result = backfill_job(harness.store, harness.publisher, "daily", start, start + timedelta(days=3),
                          Reprocess.MISSING, harness.clock.now())
    oldest, middle, newest = sorted(result.run_ids, key=lambda run_id: harness.run(run_id)["scheduled_for"])

    assert harness.deliver(newest).begin() is None  # two older slots first
    (waiting,) = harness.broker.take()
    assert waiting.delay is not None and waiting.delay <= LEASE_S * 1000 / 3
    first = harness.deliver(oldest)
    assert first.begin() is not None
    assert harness.deliver(middle).begin() is None  # the oldest holds the lease: wait, not skip
    assert harness.broker.take()
    assert harness.run(middle)["status"] == "queued"
    first.end()
    (handed_on,) = harness.broker.take()  # the lease is free: the next slot is published at once
    assert handed_on.message.args[0] == middle and handed_on.delay is None
    assert handed_on.message.options[HANDED_ON] is True

    counted: list[str] = []  # the oldest waiting run when handed on: the older ones are not counted again
    real_count = harness.store.older_waiting_slots
    monkeypatch.setattr(harness.store, "older_waiting_slots",
                        lambda job_id, *args: counted.append(job_id) or real_count(job_id, *args))
    second = harness.deliver_message(handed_on.message)
    assert second.begin() is not None and counted == []
    second.end()
    third = harness.deliver(newest)
    assert third.begin() is not None
    third.end()
    assert [harness.run(run_id)["status"] for run_id in (oldest, middle, newest)] == ["succeeded"] * 3


def test_a_backfill_run_waits_for_a_scheduled_run_holding_the_lease(harness: Harness) -> None:
    harness.job("daily", schedule="0 6 * * *")
    manual = harness.deliver(harness.trigger("daily").run_id)
    assert manual.begin() is not None
    start = datetime(2026, 2, 1, tzinfo=UTC)
    (run_id,) = backfill_job(harness.store, harness.publisher, "daily", start, start + timedelta(days=1),
                             Reprocess.MISSING, harness.clock.now()).run_ids
    assert harness.deliver(run_id).begin() is None
    assert harness.run(run_id)["status"] == "queued" and harness.broker.take()
    manual.end()
    assert harness.deliver(run_id).begin() is not None


def test_queued_slot_runs_further_back_look_again_less_often() -> None:
    assert [slot_queue_wait_ms(older) for older in (1, 2, 100, 999)] == [500, 1000, 50_000, 60_000]


def test_a_backfill_runs_lateness_counts_from_the_request_not_from_its_past_slot(harness: Harness) -> None:
    harness.job("daily", schedule="0 6 * * *")
    start = datetime(2026, 2, 1, tzinfo=UTC)
    (run_id,) = backfill_job(harness.store, harness.publisher, "daily", start, start + timedelta(days=1),
                             Reprocess.MISSING, harness.clock.now()).run_ids
    harness.clock.advance(2)
    assert harness.deliver(run_id).begin() is not None
    run = harness.run(run_id)
    assert run["scheduled_for"] == datetime(2026, 2, 1, 6, tzinfo=UTC) and run["lateness_ms"] == 2000
