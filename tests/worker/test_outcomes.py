"""`OutcomeWriter` (`cronhive.worker.outcomes`): succeeded runs' outcomes handed over
by the worker threads and written behind the process's starts — held while a start is
under way, written in one batch per collection once none is, or a statement's worth
at a time once overdue; written before the process stops; a stale one rejected.
Against the real store (the writer's own thread writes; the tests wait for it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cronhive.domain import AttemptEnd, AttemptFinish, AttemptRecord, JobOutcome
from cronhive.enums import RunStatus
from cronhive.store.base import ID_CHUNK
from cronhive.store.group_commit import committer
from cronhive.worker.attempts import Attempt
from cronhive.worker.middleware import RunLifecycle
from cronhive.worker.outages import StoreOutages
from cronhive.worker.outcomes import Finished, OutcomeWriter, defer_s, job_rounds
from tests.worker.conftest import LEASE_S, Delivery, Harness

#: long enough that nothing is overdue in a test that holds outcomes behind a start
LONG_DEFER_S = 60.0


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def behind(harness: Harness) -> Iterator[RunLifecycle]:
    """A lifecycle whose outcomes are written behind its starts, never overdue."""
    lifecycle = RunLifecycle(harness.store, harness.clock, harness.settings, harness.keeper, worker="testhost:4242",
                             write_behind=True)
    assert lifecycle.outcomes is not None
    lifecycle.outcomes = OutcomeWriter(harness.store, lifecycle.outages, LEASE_S, lifecycle._trim_history,
                                       defer=LONG_DEFER_S)
    yield lifecycle
    lifecycle.outcomes.stop(timeout=10)


def writer_of(lifecycle: RunLifecycle) -> OutcomeWriter:
    assert lifecycle.outcomes is not None
    return lifecycle.outcomes


def started(harness: Harness, lifecycle: RunLifecycle, count: int) -> list[tuple[str, Delivery]]:
    """``count`` forbid jobs' slot runs, each started from its snapshot."""
    runs = []
    for index in range(count):
        harness.job(f"job{index}")
        run_id, message = harness.slot(f"job{index}")
        delivery = harness.deliver_message(message, lifecycle=lifecycle)
        assert delivery.begin() is not None
        runs.append((run_id, delivery))
    return runs


def status(harness: Harness, run_id: str) -> str:
    return str(harness.run(run_id)["status"])


def test_outcomes_wait_while_a_start_is_under_way_then_go_in_one_batch_per_collection(
        harness: Harness, behind: RunLifecycle) -> None:
    writer = writer_of(behind)
    runs = started(harness, behind, 5)
    run_commands = committer(harness.store.runs).commands
    job_commands = committer(harness.store.jobs).commands
    with writer.starting():  # another thread is starting an attempt
        for _, delivery in runs:
            delivery.end(result={"ok": True})  # returns at once
        time.sleep(0.3)  # longer than the quiet span: held only because a start is under way
        assert writer.held() == 5
        assert {status(harness, run_id) for run_id, _ in runs} == {"running"}
        assert harness.job_doc("job0")["lease"] is not None
    wait_until(lambda: writer.held() == 0 and all(status(harness, run_id) == "succeeded" for run_id, _ in runs))
    wait_until(lambda: writer.batches == 1)
    assert committer(harness.store.runs).commands - run_commands == 1  # five runs' ends, one command
    assert committer(harness.store.jobs).commands - job_commands == 1  # five jobs' outcomes and releases
    for index, (run_id, _) in enumerate(runs):
        run, job = harness.run(run_id), harness.job_doc(f"job{index}")
        assert run["output_json"] == '{"ok":true}' and run["attempts"][-1]["status"] == "succeeded"
        assert job["lease"] is None and (job["last_run_id"], job["last_run_status"]) == (run_id, "succeeded")


def test_an_idle_process_writes_an_outcome_at_once(harness: Harness, behind: RunLifecycle) -> None:
    (run_id, delivery), = started(harness, behind, 1)
    delivery.end()
    wait_until(lambda: status(harness, run_id) == "succeeded", timeout=2)
    wait_until(lambda: harness.job_doc("job0")["lease"] is None, timeout=2)


def test_overdue_outcomes_are_written_a_statement_at_a_time_while_starts_go_on(harness: Harness) -> None:
    lifecycle = RunLifecycle(harness.store, harness.clock, harness.settings, harness.keeper, worker="testhost:4242")
    writer = OutcomeWriter(harness.store, StoreOutages(LEASE_S), LEASE_S, defer=0.2)
    lifecycle.outcomes = writer
    try:
        runs = started(harness, lifecycle, ID_CHUNK + 10)
        with writer.starting():  # starts never stop
            for _, delivery in runs:
                delivery.end()
            wait_until(lambda: writer.held() == 0 and writer.batches == 2)  # ID_CHUNK, then the rest
            assert {status(harness, run_id) for run_id, _ in runs} == {"succeeded"}
    finally:
        writer.stop(timeout=10)


def test_stopping_writes_what_is_held_without_waiting_for_starts(harness: Harness, behind: RunLifecycle) -> None:
    writer = writer_of(behind)
    runs = started(harness, behind, 3)
    with writer.starting():
        for _, delivery in runs:
            delivery.end()
        stopper = threading.Thread(target=writer.stop)
        stopper.start()
        stopper.join(timeout=10)
        assert not stopper.is_alive()
        assert writer.held() == 0
        assert {status(harness, run_id) for run_id, _ in runs} == {"succeeded"}


def test_failures_are_still_written_by_the_thread_so_the_message_is_rejected(
        harness: Harness, behind: RunLifecycle) -> None:
    writer = writer_of(behind)
    (run_id, delivery), = started(harness, behind, 1)
    with writer.starting():
        delivery.end(exception=RuntimeError("boom"))
        assert writer.held() == 0
        assert status(harness, run_id) == "failed" and delivery.failed  # dead-lettered
        assert harness.job_doc("job0")["lease"] is None


def test_an_outcome_a_newer_attempt_overtook_is_rejected_and_touches_nothing(
        harness: Harness, behind: RunLifecycle, caplog: pytest.LogCaptureFixture) -> None:
    writer = writer_of(behind)
    (run_id, delivery), = started(harness, behind, 1)
    with writer.starting():
        delivery.end()
        # meanwhile the attempt was given up and a newer one owns the run and the job lease
        harness.store.runs.update_one({"_id": run_id}, {"$set": {"attempt": 2, "lease_token": 99}})
        harness.store.jobs.update_one({"_id": "job0"}, {"$set": {"lease.token": 99, "lease.holder": "other"}})
    wait_until(lambda: writer.held() == 0 and writer.batches == 1)
    run, job = harness.run(run_id), harness.job_doc("job0")
    assert run["status"] == "running" and run["attempt"] == 2
    assert job["lease"]["holder"] == "other" and job.get("last_run_id") is None
    assert any("late write rejected" in record.getMessage() for record in caplog.records)


def test_written_again_after_a_lost_reply_an_outcome_is_recognised_as_landed(harness: Harness,
                                                                             behind: RunLifecycle) -> None:
    """The writer's retry after MongoDB failed mid-batch: what landed stays applied."""
    writer = writer_of(behind)
    (run_id, delivery), = started(harness, behind, 1)
    assert delivery.attempt is not None
    finished = outcome_of(delivery.attempt, harness)
    writer.write([finished])
    again = outcome_of(delivery.attempt, harness)
    writer.write([again])  # the same outcome again: its proof says it is there
    assert not again.rejected and again.job_applied
    assert status(harness, run_id) == "succeeded" and harness.job_doc("job0")["lease"] is None


def outcome_of(attempt: Attempt, harness: Harness) -> Finished:
    now = harness.clock.now()
    end = AttemptEnd(RunStatus.SUCCEEDED, None, finished_at=now, duration_ms=5)
    record = AttemptRecord(attempt.number, attempt.worker, RunStatus.SUCCEEDED, attempt.started_at, now, 5, None)
    return Finished(attempt, AttemptFinish(attempt.run_id, attempt.number, attempt.token, end, record),
                    JobOutcome(attempt.job_id, attempt.run_id, RunStatus.SUCCEEDED, 5, attempt.lease,
                               attempt.job_incarnation))


def test_two_outcomes_of_one_job_are_written_in_the_order_handed() -> None:
    def item(job_id: str, run_id: str) -> Any:
        return type("Item", (), {"job": JobOutcome(job_id, run_id, RunStatus.SUCCEEDED, 1, None, None)})()

    items = [item("a", "r1"), item("b", "r2"), item("a", "r3"), item("a", "r4"), item("c", "r5")]
    rounds = [[entry.job.run_id for entry in round_] for round_ in job_rounds(items)]
    assert rounds == [["r1", "r2", "r5"], ["r3"], ["r4"]]


def test_an_outcome_waits_at_most_a_twelfth_of_the_lease() -> None:
    assert defer_s(30) == 2.0 and defer_s(3) == 0.25

