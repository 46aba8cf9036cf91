"""`RunLifecycle` against the real store, with a clock moved by hand (no sleeping):
takeover of the trigger's reservation, fencing of stale attempts, duplicates,
redeliveries, overlap policies, outcomes, retries and dead-lettering."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from dramatiq.middleware import TimeLimitExceeded

from cronhive.errors import LeaseHeld, StoreUnavailable
from cronhive.handlers import HandlerFailed
from cronhive.leases import reservation_holder
from cronhive.worker import middleware
from cronhive.worker.attempts import MAX_ERROR_CHARS, LeaseLostInterrupt
from cronhive.worker.records import AFTER_ATTEMPT
from tests.worker.conftest import LEASE_S, Harness


def test_the_first_attempt_starts_under_its_runs_reservation_as_it_stands(harness: Harness) -> None:
    harness.job("report", handler="noop")
    run_id = harness.trigger("report").run_id
    reserved = harness.job_doc("report")["lease"]
    assert reserved["holder"] == reservation_holder(run_id)

    harness.clock.advance(0.25)
    attempt = harness.deliver(run_id).begin()

    assert attempt is not None and attempt.number == 1
    assert (attempt.lease.holder, attempt.token) == (reserved["holder"], reserved["token"])
    assert harness.job_doc("report")["lease"] == reserved  # the job is not written to start
    run = harness.run(run_id)
    assert run["status"] == "running" and run["attempt"] == 1
    assert (run["lease_holder"], run["lease_token"]) == (reserved["holder"], reserved["token"])
    assert run["worker"] == "testhost:4242"
    assert run["started_at"] == harness.clock.now() and run["lateness_ms"] == 250


def test_a_retry_takes_the_lease_with_a_new_holder_and_token(harness: Harness) -> None:
    harness.job("report", handler="noop", max_retries=1)
    run_id = harness.trigger("report").run_id
    first = harness.deliver(run_id)
    assert first.begin() is not None
    first.end(exception=RuntimeError("boom"))
    (retry,) = harness.broker.take()
    harness.clock.advance(LEASE_S)

    attempt = harness.deliver_message(retry.message).begin()
    assert attempt is not None and attempt.number == 2 and attempt.token > first.attempt.token  # type: ignore[union-attr]
    lease = harness.job_doc("report")["lease"]
    assert lease["holder"] == attempt.lease.holder and lease["holder"].startswith(f"testhost:4242:{run_id}:2:")
    assert lease["token"] == attempt.token and lease["run_id"] == run_id


def test_a_finished_run_records_its_outcome_and_releases_the_lease_in_one_go(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    delivery = harness.deliver(run_id)
    delivery.begin()
    harness.clock.advance(1)
    delivery.end()

    run = harness.run(run_id)
    assert run["status"] == "succeeded" and run["error"] is None
    assert run["finished_at"] == harness.clock.now()
    assert isinstance(run["duration_ms"], int) and run["duration_ms"] >= 0
    assert [a["status"] for a in run["attempts"]] == ["succeeded"]
    job = harness.job_doc("report")
    assert job["lease"] is None
    assert (job["last_run_id"], job["last_run_status"], job["last_run_duration_ms"]) == (
        run_id, "succeeded", run["duration_ms"])
    assert not delivery.failed
    # the next trigger gets the lease
    assert harness.trigger("report").lock_acquired


def test_a_duplicate_delivery_is_acknowledged_without_running(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    first = harness.deliver(run_id)
    assert first.begin() is not None

    assert harness.deliver(run_id).begin() is None  # published twice: live lease, not redelivered
    assert harness.broker.take() == []
    assert harness.run(run_id)["attempt"] == 1

    first.end()
    assert harness.deliver(run_id).begin() is None  # already final
    assert harness.deliver(run_id, redelivered=True).begin() is None
    assert harness.run(run_id)["status"] == "succeeded" and harness.run(run_id)["attempt"] == 1


def test_a_redelivered_message_waits_for_the_live_lease_then_abandons_the_dead_attempt(harness: Harness) -> None:
    harness.job("report", max_retries=0)
    run_id = harness.trigger("report").run_id
    assert harness.deliver(run_id).begin() is not None  # this worker then dies
    harness.clock.advance(1)

    assert harness.deliver(run_id, redelivered=True).begin() is None
    (waiting,) = harness.broker.take()
    assert waiting.message.options[AFTER_ATTEMPT] == 1
    assert 100 <= waiting.delay <= LEASE_S * 1000 / 3 + 1
    assert harness.run(run_id)["status"] == "running"

    harness.clock.advance(LEASE_S)  # the dead attempt's lease expired
    assert harness.deliver_message(waiting.message).begin() is None

    run = harness.run(run_id)
    assert run["status"] == "abandoned" and run["attempt"] == 1
    assert run["error"]["type"] == "abandoned"
    assert [a["status"] for a in run["attempts"]] == ["abandoned"]
    job = harness.job_doc("report")
    assert job["lease"] is None and job["last_run_status"] == "abandoned" and job["last_run_id"] == run_id
    assert harness.trigger("report").lock_acquired  # the job fires normally again


def test_a_dead_attempt_is_retried_with_a_new_token_and_its_late_writes_are_rejected(harness: Harness) -> None:
    harness.job("report", max_retries=1)
    run_id = harness.trigger("report").run_id
    stalled = harness.deliver(run_id)
    old = stalled.begin()
    assert old is not None

    harness.clock.advance(LEASE_S + 1)  # the first worker stalls (SIGSTOP) past expiry
    newer = harness.deliver(run_id, redelivered=True)
    new = newer.begin()
    assert new is not None and new.number == 2 and new.token > old.token
    run = harness.run(run_id)
    assert run["attempts"][0]["attempt"] == 1 and run["attempts"][0]["status"] == "abandoned"

    # the stalled worker wakes up: its renewal fails and its outcome is rejected
    assert not harness.keeper.renew(old, harness.clock.now())
    stalled.end()
    run = harness.run(run_id)
    assert run["status"] == "running" and run["attempt"] == 2 and run["lease_token"] == new.token
    assert harness.job_doc("report")["lease"]["holder"] == new.lease.holder

    newer.end(HandlerFailed("boom"))  # retries spent (max_retries=1): final
    stalled.end(None)  # a second late write changes nothing either
    run = harness.run(run_id)
    assert run["status"] == "failed" and run["attempt"] == 2
    assert run["error"] == {"type": "HandlerFailed", "message": "boom"}
    assert newer.failed and not stalled.failed
    assert harness.job_doc("report")["lease"] is None


def test_renewal_keeps_the_lease_past_its_duration_and_fails_after_expiry(harness: Harness) -> None:
    harness.job("report")
    run_id = harness.trigger("report").run_id
    delivery = harness.deliver(run_id)
    attempt = delivery.begin()
    assert attempt is not None
    harness.keeper.track(attempt)

    for _ in range(3 * LEASE_S):  # three lease durations, renewing every second (a third of the lease)
        now = harness.clock.advance(1)
        assert harness.keeper.renew_all(now) == []
        lease = harness.job_doc("report")["lease"]
        assert lease["expires_at"] == now + timedelta(seconds=LEASE_S) and lease["token"] == attempt.token
        assert harness.deliver(run_id, redelivered=True).begin() is None  # waits, never a second attempt
    assert harness.run(run_id)["attempt"] == 1

    harness.clock.advance(LEASE_S + 0.5)  # renewals stopped (stalled process)
    assert harness.keeper.renew_all(harness.clock.now()) == [attempt]
    assert attempt.lost


def test_forbid_skips_a_run_whose_reservation_another_run_took(harness: Harness) -> None:
    harness.job("report", overlap_policy="forbid")
    first = harness.trigger("report").run_id
    assert harness.deliver(first).begin() is not None
    with pytest.raises(LeaseHeld):
        harness.trigger("report")

    # a slot whose reservation expired while its message waited in the queue
    harness.store.runs.insert_one({**harness.run(first), "_id": "run_late", "status": "queued", "attempt": 0,
                                   "lease_token": None, "lease_holder": None, "attempts": [], "worker": None})
    assert harness.deliver("run_late").begin() is None
    late = harness.run("run_late")
    assert late["status"] == "skipped" and late["error"]["type"] == "overlap" and first in late["error"]["message"]
    assert harness.run(first)["status"] == "running"


def test_buffer_one_waits_for_the_lease_without_consuming_retries(harness: Harness) -> None:
    harness.job("report", overlap_policy="buffer_one", max_retries=0)
    first = harness.trigger("report").run_id
    running = harness.deliver(first)
    assert running.begin() is not None
    buffered = harness.trigger("report")
    assert not buffered.lock_acquired
    assert harness.job_doc("report")["buffered_run_id"] == buffered.run_id
    with pytest.raises(LeaseHeld):
        harness.trigger("report")  # one waits already

    assert harness.deliver(buffered.run_id).begin() is None
    (waiting,) = harness.broker.take()
    assert waiting.delay is not None and harness.run(buffered.run_id)["status"] == "queued"

    running.end()
    attempt = harness.deliver_message(waiting.message).begin()
    assert attempt is not None and attempt.number == 1
    job = harness.job_doc("report")
    assert job["buffered_run_id"] is None and job["lease"]["run_id"] == buffered.run_id


def test_allow_runs_overlap_but_each_run_has_one_attempt_at_a_time(harness: Harness) -> None:
    harness.job("report", overlap_policy="allow")
    one, two = harness.trigger("report").run_id, harness.trigger("report").run_id
    first, second = harness.deliver(one), harness.deliver(two)
    assert first.begin() is not None and second.begin() is not None
    assert harness.deliver(one).begin() is None  # the same run again: its own lease is held
    assert harness.job_doc("report")["lease"] is None  # no job lease under allow
    assert harness.run(one)["lease"]["holder"] == first.attempt.lease.holder  # type: ignore[union-attr]

    first.end()
    second.end()
    assert harness.run(one)["status"] == harness.run(two)["status"] == "succeeded"
    assert harness.run(one)["lease"] is None
    assert harness.job_doc("report")["last_run_status"] == "succeeded"


def test_time_limit_and_failures_are_recorded_and_dead_lettered(harness: Harness) -> None:
    harness.job("slow", timeout_s=2)
    harness.job("broken")
    slow = harness.deliver(harness.trigger("slow").run_id)
    assert slow.begin() is not None
    assert slow.proxy.options["time_limit"] == 2000  # read by Dramatiq's TimeLimit, which runs after
    slow.end(TimeLimitExceeded())
    run = harness.run(slow.attempt.run_id)  # type: ignore[union-attr]
    assert run["status"] == "timed_out" and run["error"]["type"] == "timeout"
    assert slow.failed and harness.job_doc("slow")["last_run_status"] == "timed_out"

    broken = harness.deliver(harness.trigger("broken").run_id)
    broken.begin()
    broken.end(ValueError("x" * 10_000))
    run = harness.run(broken.attempt.run_id)  # type: ignore[union-attr]
    assert run["status"] == "failed" and run["error"]["type"] == "ValueError"
    assert len(run["error"]["message"]) == MAX_ERROR_CHARS
    assert broken.failed


def test_failures_are_retried_as_new_attempts_with_exponential_backoff(harness: Harness) -> None:
    harness.job("flaky", max_retries=2)
    run_id = harness.trigger("flaky").run_id
    delivery = harness.deliver(run_id)
    tokens = []
    for number in (1, 2, 3):
        attempt = delivery.begin()
        assert attempt is not None and attempt.number == number
        tokens.append(attempt.token)
        delivery.end(HandlerFailed(f"failure {number}"))
        run = harness.run(run_id)
        if number == 3:
            break
        base = 1000 * 2 ** (number - 1)
        (retry,) = harness.broker.take()
        assert base <= retry.delay < 2 * base  # Dramatiq's backoff with jitter
        assert retry.message.options[AFTER_ATTEMPT] == number
        assert run["status"] == "queued" and run["error"]["message"] == f"failure {number}"
        assert run["retry_at"] == harness.clock.now() + timedelta(milliseconds=retry.delay)
        lease = harness.job_doc("flaky")["lease"]  # held for the run while its retry waits
        assert lease["holder"] == reservation_holder(run_id)
        assert lease["expires_at"] == run["retry_at"] + timedelta(seconds=LEASE_S)
        assert not delivery.failed
        with pytest.raises(LeaseHeld):
            harness.trigger("flaky")

        early = harness.deliver_message(retry.message)
        assert early.begin() is None  # before retry_at: waits again
        (again,) = harness.broker.take()
        assert again.delay is not None and again.delay <= retry.delay + 100
        harness.clock.advance(retry.delay / 1000)
        delivery = harness.deliver_message(retry.message)

    assert tokens == sorted(set(tokens))  # a new fencing token for each attempt
    assert run["status"] == "failed" and run["attempt"] == 3
    assert [(a["attempt"], a["status"]) for a in run["attempts"]] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert delivery.failed  # retries spent: dead-lettered
    job = harness.job_doc("flaky")
    assert job["lease"] is None and job["last_run_status"] == "failed"


def test_lease_loss_interrupts_the_running_handler(harness: Harness) -> None:
    import threading
    import time

    harness.job("report")
    delivery = harness.deliver(harness.trigger("report").run_id)
    attempt = delivery.begin()
    assert attempt is not None
    outcome: list[BaseException] = []
    entered = threading.Event()

    def handler_thread() -> None:
        attempt.thread_id = threading.get_ident()
        try:
            with harness.keeper.handler_running(attempt):
                entered.set()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    time.sleep(0.01)
        except LeaseLostInterrupt as exc:
            outcome.append(exc)

    thread = threading.Thread(target=handler_thread)
    thread.start()
    assert entered.wait(5)
    harness.keeper.track(attempt)
    harness.clock.advance(LEASE_S + 1)
    assert harness.keeper.renew_all(harness.clock.now()) == [attempt]
    thread.join(5)
    assert not thread.is_alive() and len(outcome) == 1


def test_a_start_that_fails_midway_is_published_again_never_run_without_a_lease(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cronhive.errors import BrokerUnavailable, StoreUnavailable

    harness.job("report")
    run_id = harness.trigger("report").run_id
    real_start = harness.store.start_run_attempt

    def unreachable(*args: object, **kwargs: object) -> bool:
        raise StoreUnavailable("MongoDB is unreachable")

    monkeypatch.setattr(harness.store, "start_run_attempt", unreachable)  # after the lease was claimed
    first = harness.deliver(run_id)
    assert first.begin() is None and not first.failed
    (later,) = harness.broker.take()
    assert later.message.options[AFTER_ATTEMPT] == 0 and later.delay == LEASE_S * 1000 // 3
    assert harness.run(run_id)["status"] == "queued"

    monkeypatch.setattr(harness.store, "start_run_attempt", real_start)
    # a first attempt takes nothing before its start applies: the reservation is still the run's
    assert harness.job_doc("report")["lease"]["holder"] == reservation_holder(run_id)
    attempt = harness.deliver_message(later.message).begin()
    assert attempt is not None and attempt.number == 1 and attempt.lease.holder == reservation_holder(run_id)

    harness.job("own", overlap_policy="allow")  # a lease claimed before the start: waited out
    own = harness.trigger("own").run_id
    monkeypatch.setattr(harness.store, "start_run_attempt", unreachable)
    assert harness.deliver(own).begin() is None
    (later,) = harness.broker.take()
    monkeypatch.setattr(harness.store, "start_run_attempt", real_start)
    assert harness.deliver_message(later.message).begin() is None  # waits out the lease it had claimed
    (waiting,) = harness.broker.take()
    harness.clock.advance(LEASE_S)
    attempt = harness.deliver_message(waiting.message).begin()
    assert attempt is not None and attempt.number == 1

    def broker_down(*args: object, **kwargs: object) -> None:
        raise BrokerUnavailable("RabbitMQ is unreachable")

    harness.job("other")
    other = harness.trigger("other").run_id
    monkeypatch.setattr(harness.store, "find_run", unreachable)
    monkeypatch.setattr(harness.broker, "enqueue", broker_down)
    stuck = harness.deliver(other)
    assert stuck.begin() is None and stuck.failed  # dead-lettered rather than lost


def test_after_mongodb_was_unreachable_an_expired_attempt_is_left_a_lease_to_write_its_outcome(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases expire through an outage (nobody can renew them): a delivery of such a run
    right after it — a duplicate the leader published again, a redelivery — neither
    abandons the attempt nor starts one in its place while its worker may be writing the
    outcome it kept; it waits, following the attempt, until a lease after MongoDB
    answered this process again (the chaos suite's MongoDB SIGKILL saw a kept outcome
    lose to such a delivery's abandon)."""
    harness.job("final", max_retries=0)
    harness.job("retried", max_retries=1)
    final, retried = harness.trigger("final").run_id, harness.trigger("retried").run_id
    kept = harness.deliver(final)
    assert kept.begin() is not None and harness.deliver(retried).begin() is not None
    real_find = harness.store.find_run

    def unreachable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("MongoDB is unreachable (test)")

    monkeypatch.setattr(harness.store, "find_run", unreachable)
    assert harness.deliver(final).begin() is None  # this process finds MongoDB away
    harness.broker.take()
    harness.clock.advance(LEASE_S + 1)  # down past the leases' expiry
    monkeypatch.setattr(harness.store, "find_run", real_find)

    for run_id in (final, retried):  # MongoDB answers again
        assert harness.deliver(run_id, redelivered=True).begin() is None
    waiting = {entry.message.args[0]: entry for entry in harness.broker.take()}
    assert set(waiting) == {final, retried}
    assert all(entry.message.options[AFTER_ATTEMPT] == 1 for entry in waiting.values())
    assert [harness.run(run_id)["status"] for run_id in (final, retried)] == ["running", "running"]
    assert harness.run(retried)["attempt"] == 1

    kept.end()  # the live worker's kept outcome lands
    assert harness.run(final)["status"] == "succeeded"
    assert harness.deliver_message(waiting[final].message).begin() is None  # final: acknowledged
    assert harness.broker.take() == []

    harness.clock.advance(LEASE_S)  # a lease after MongoDB answered: the silent attempt is dead
    attempt = harness.deliver_message(waiting[retried].message).begin()
    assert attempt is not None and attempt.number == 2
    assert [a["status"] for a in harness.run(retried)["attempts"]] == ["abandoned"]


def unavailable_at_first(harness: Harness, monkeypatch: pytest.MonkeyPatch, method: str,
                         times: int) -> list[tuple[Any, ...]]:
    """Make the store's ``method`` raise `StoreUnavailable` on its first ``times`` calls
    (MongoDB away), and the worker write its kept outcome again at once; the calls' args."""
    real = getattr(harness.store, method)
    calls: list[tuple[Any, ...]] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) <= times:
            raise StoreUnavailable("MongoDB is unreachable (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(harness.store, method, flaky)
    monkeypatch.setattr(middleware, "OUTCOME_RETRY_EVERY_S", 0.01)
    return calls


def test_an_outcome_whose_job_write_was_lost_is_completed_when_written_again(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's outcome landed, MongoDB went away before the job's (``last_run_*`` and the
    lease release): the kept outcome is written again, the run's write is recognised as
    already made (group commit's proof) and the job's is made — the lease does not wait
    out its expiry, nothing is recorded twice."""
    harness.job("report")
    run_id = harness.trigger("report").run_id
    delivery = harness.deliver(run_id)
    delivery.begin()
    calls = unavailable_at_first(harness, monkeypatch, "record_job_outcome", times=1)
    harness.clock.advance(1)
    delivery.end()

    assert [args[1] for args in calls] == [run_id, run_id]
    run = harness.run(run_id)
    assert run["status"] == "succeeded" and [a["status"] for a in run["attempts"]] == ["succeeded"]
    job = harness.job_doc("report")
    assert job["lease"] is None and (job["last_run_id"], job["last_run_status"]) == (run_id, "succeeded")


def test_a_retry_whose_outcome_is_written_through_an_outage_is_published_once(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.job("flaky", max_retries=1)
    run_id = harness.trigger("flaky").run_id
    delivery = harness.deliver(run_id)
    delivery.begin()
    calls = unavailable_at_first(harness, monkeypatch, "finish_run_attempt", times=2)
    delivery.end(HandlerFailed("failure 1"))

    assert [args[1] for args in calls] == [1, 1, 1]
    (retry,) = harness.broker.take()  # one retry message, not one per try of the write
    run = harness.run(run_id)
    assert run["status"] == "queued" and run["retry_at"] == harness.clock.now() + timedelta(milliseconds=retry.delay)
