"""A slot run's message carrying its job's snapshot (`cronhive.snapshots`): the worker
starts it without reading anything, and falls back to reading the run and the job
whenever either is no longer as published — the job changed, deleted or re-created,
the run cancelled or already started, the message redelivered or its snapshot
unusable. Against the real store, the clock moved by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cronhive.broker import run_message
from cronhive.domain import RunError, new_run, new_run_id
from cronhive.enums import ErrorType, Trigger
from cronhive.leases import reservation_holder
from cronhive.settings import Settings
from cronhive.snapshots import SNAPSHOT_OPTION, JobSnapshot
from cronhive.store import MongoStore
from cronhive.worker.middleware import RunLifecycle
from cronhive.worker.records import HANDED_ON
from tests.services import CommandCounter
from tests.worker.conftest import LEASE_S, Harness

ROOT = Path(__file__).resolve().parents[2]
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


def test_a_slot_run_with_its_snapshot_starts_in_one_write_under_its_reservation_and_ends_in_two(
        harness: Harness, counted: tuple[RunLifecycle, CommandCounter]) -> None:
    lifecycle, commands = counted
    harness.job("report", handler="noop", args={"to": "ops"}, timeout_s=30, max_retries=2)
    run_id, message = harness.slot("report")
    reserved = harness.job_doc("report")["lease"]
    harness.clock.advance(0.25)
    commands.take()

    delivery = harness.deliver_message(message, lifecycle=lifecycle)
    attempt = delivery.begin()
    assert commands.take() == ["update"]  # the run's start: the job is neither read nor written
    assert attempt is not None and attempt.number == 1 and attempt.token == reserved["token"]
    assert (attempt.handler, attempt.args, attempt.timeout_s, attempt.max_retries) == ("noop", {"to": "ops"}, 30, 2)
    run = harness.run(run_id)
    assert run["status"] == "running" and run["attempt"] == 1 and run["lease_token"] == attempt.token
    assert run["lateness_ms"] == 250 and run["worker"] == "testhost:4242"
    assert run["lease_holder"] == attempt.lease.holder == reservation_holder(run_id)
    assert harness.job_doc("report")["lease"] == reserved  # the attempt holds it as the reservation made it

    harness.clock.advance(1)
    delivery.end(result={"sent": 3})
    assert commands.take() == ["update", "update"]  # the run's outcome, the job's outcome + release
    run = harness.run(run_id)
    assert run["status"] == "succeeded" and run["output_json"] == '{"sent":3}'
    job = harness.job_doc("report")
    assert job["lease"] is None and (job["last_run_id"], job["last_run_status"]) == (run_id, "succeeded")


def test_the_head_of_a_fire_all_queue_starts_from_its_snapshot_and_hands_the_lease_on_to_the_next_slot(
        harness: Harness, counted: tuple[RunLifecycle, CommandCounter]) -> None:
    lifecycle, commands = counted
    harness.job("queue", misfire_policy="fire_all", overlap_policy="forbid")
    slot = harness.clock.now()
    head, message = harness.slot("queue", slot)  # the leader reserved the lease for the oldest slot
    behind = new_run_id(slot + timedelta(seconds=1))
    harness.store.insert_run(new_run(harness.store.get_job("queue"), behind, Trigger.SCHEDULE,
                                     slot + timedelta(seconds=1), harness.clock.now(), None))
    harness.clock.advance(1.25)
    commands.take()

    delivery = harness.deliver_message(message, lifecycle=lifecycle)
    attempt = delivery.begin()
    assert commands.take() == ["update"]  # no read, no count of older slots: it is the oldest
    assert attempt is not None and attempt.queued_slot and attempt.run_id == head
    delivery.end()
    # the run's outcome; the next waiting slot; the job's outcome handing the lease on to it
    assert commands.take() == ["update", "find", "update"]
    lease = harness.job_doc("queue")["lease"]
    assert (lease["holder"], lease["token"]) == (reservation_holder(behind), attempt.token + 1)
    assert harness.job_doc("queue")["last_run_id"] == head
    (handed_on,) = harness.broker.take()
    assert handed_on.message.args[0] == behind and handed_on.message.options[HANDED_ON] is True
    snapshot = JobSnapshot.from_option(handed_on.message.options[SNAPSHOT_OPTION])
    assert snapshot is not None and snapshot.queues_slots and snapshot.reserved_token == lease["token"]
    assert snapshot.slot == slot + timedelta(seconds=1)

    nxt = harness.deliver_message(handed_on.message, lifecycle=lifecycle).begin()
    assert commands.take() == ["update"]  # it too starts in one write: nothing read, nothing claimed
    assert nxt is not None and nxt.run_id == behind and nxt.token == lease["token"] and nxt.queued_slot
    assert harness.run(behind)["lease_token"] == lease["token"]
    again = harness.deliver_message(run_message(harness.settings.runs_queue, behind, "queue"))
    assert again.begin() is None  # its own message: the run is running


def handed_on_to_behind(harness: Harness) -> tuple[str, Any]:
    """A fire_all queue of two slots whose head ran and handed the lease on to the other:
    the other's run id and its hand-on message (with the job's snapshot)."""
    harness.job("queue", misfire_policy="fire_all", overlap_policy="forbid")
    slot = harness.clock.now()
    _, message = harness.slot("queue", slot)
    behind = new_run_id(slot + timedelta(seconds=1))
    harness.store.insert_run(new_run(harness.store.get_job("queue"), behind, Trigger.SCHEDULE,
                                     slot + timedelta(seconds=1), harness.clock.now(), None))
    harness.clock.advance(1.25)
    delivery = harness.deliver_message(message)
    assert delivery.begin() is not None
    delivery.end()
    (handed_on,) = harness.broker.take()
    assert SNAPSHOT_OPTION in handed_on.message.options
    return behind, handed_on.message


def test_a_hand_on_whose_job_changed_since_reads_the_job_and_starts_under_the_reservation_handed_on(
        harness: Harness) -> None:
    behind, message = handed_on_to_behind(harness)
    lease = harness.job_doc("queue")["lease"]
    harness.store.void_run_snapshots(harness.store.get_job("queue"))  # the job is being changed
    attempt = harness.deliver_message(message).begin()
    assert attempt is not None and attempt.run_id == behind  # read, then started under the reservation
    assert (attempt.lease.holder, attempt.token) == (reservation_holder(behind), lease["token"])


def test_a_run_cancelled_after_the_lease_was_handed_on_to_it_frees_the_lease(harness: Harness) -> None:
    behind, message = handed_on_to_behind(harness)
    run = harness.store.get_run(behind)  # what the API's cancel does with a run not started
    assert harness.store.cancel_unstarted_run(run, RunError(ErrorType.CANCELLED, "cancelled"), harness.clock.now())
    assert harness.store.release_reservation("queue", behind)
    assert harness.job_doc("queue")["lease"] is None  # the reservation handed on to it is freed
    assert harness.deliver_message(message).begin() is None
    assert harness.run(behind)["status"] == "cancelled"


@pytest.mark.parametrize("elapsed", [LEASE_S * 0.6, LEASE_S * 5],
                         ids=["under-half-a-lease-left", "expired-while-nobody-took-it"])
def test_a_reservation_without_half_a_lease_left_is_held_for_a_lease_before_the_start(
        harness: Harness, counted: tuple[RunLifecycle, CommandCounter], elapsed: float) -> None:
    lifecycle, commands = counted
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report")
    reserved = harness.job_doc("report")["lease"]
    harness.clock.advance(elapsed)  # 40 % of it left, or the workers are behind and it expired long ago
    commands.take()

    attempt = harness.deliver_message(message, lifecycle=lifecycle).begin()
    assert commands.take() == ["update", "update"]  # the reservation held, then the start: nothing read
    assert attempt is not None and attempt.token == reserved["token"]
    lease = harness.job_doc("report")["lease"]
    assert (lease["holder"], lease["token"]) == (reservation_holder(run_id), reserved["token"])
    now = harness.clock.now()
    assert lease["expires_at"] == now.replace(microsecond=now.microsecond // 1000 * 1000) + timedelta(seconds=LEASE_S)
    assert attempt.lease.expires_at == lease["expires_at"]


def test_a_snapshot_without_the_reservations_expiry_renews_it_first(
        harness: Harness, counted: tuple[RunLifecycle, CommandCounter]) -> None:
    lifecycle, commands = counted
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report")
    older = {key: value for key, value in message.options[SNAPSHOT_OPTION].items() if key != "until"}
    harness.clock.advance(0.25)
    commands.take()

    attempt = harness.deliver_message(message.copy(options={SNAPSHOT_OPTION: older}), lifecycle=lifecycle).begin()
    assert commands.take() == ["update", "update"] and attempt is not None
    assert harness.run(run_id)["status"] == "running"


def test_a_delivery_that_read_the_run_before_another_started_it_never_takes_its_lease(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.job("report", handler="noop")
    run_id, message = harness.slot("report")
    stale = harness.store.get_run(run_id)  # what a second delivery read, just before the first started
    first = harness.deliver_message(message).begin()
    assert first is not None
    reserved = harness.job_doc("report")["lease"]

    reads = iter([stale])
    real_find_run = harness.store.find_run
    monkeypatch.setattr(harness.store, "find_run", lambda rid: next(reads, None) or real_find_run(rid))
    assert harness.deliver_message(message, redelivered=True).begin() is None  # it waits for the live attempt
    assert harness.job_doc("report")["lease"] == reserved  # never taken over, never released
    assert harness.store.renew_lease(first.lease, LEASE_S, harness.clock.now()) is not None
    run = harness.run(run_id)
    assert (run["status"], run["attempt"], run["lease_token"]) == ("running", 1, first.token)


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


@pytest.mark.parametrize("path", ["snapshot", "read"])
def test_a_slot_run_delivered_just_before_its_slot_starts_at_the_slot_not_before(harness: Harness,
                                                                                   path: str) -> None:
    """Within the early tolerance (the database clocks of two processes differ by a few
    ms) the delivery sleeps until the slot: ``started_at`` is never before it."""
    harness.job("report", handler="noop")
    slot = harness.clock.now() + timedelta(milliseconds=200)
    run_id, message = harness.slot("report", slot)
    delivery = harness.deliver_message(message, redelivered=path == "read")
    began = time.monotonic()
    attempt = delivery.begin()
    assert attempt is not None and time.monotonic() - began >= 0.19  # slept until the slot
    run = harness.run(run_id)
    assert run["status"] == "running" and run["started_at"] == slot and run["lateness_ms"] == 0


#: One racing worker process: 4 threads, each delivering every message once (in its own
#: order; odd threads as redeliveries, which read the run and the job), at the same
#: instant as the other processes; prints the starts it won.
RACER = r'''
import json, random, sys, threading, time
from datetime import datetime
from cronhive.broker import run_message
from cronhive.settings import Settings
from cronhive.snapshots import JobSnapshot
from cronhive.store import MongoStore
from cronhive.worker.keeper import LeaseKeeper
from cronhive.worker.middleware import RunLifecycle
from tests.worker.conftest import Delivery, FakeClock, RecordingBroker

uri, db, queue, name, lease_s, now, start_at, path = sys.argv[1:]
settings = Settings.from_env({"MONGODB_URI": uri, "MONGODB_DB": db, "RUNS_QUEUE": queue,
                              "JOB_LEASE_S": lease_s})
store = MongoStore.open(settings)
clock = FakeClock(datetime.fromisoformat(now))
lifecycle = RunLifecycle(store, clock, settings, LeaseKeeper(store, clock, float(lease_s)), worker=name)
messages = [run_message(queue, run_id, job_id, JobSnapshot.from_option(option))
            for run_id, job_id, option in json.load(open(path))]
started, lock = [], threading.Lock()

def deliver(thread):
    order = list(messages)
    random.Random(f"{name}{thread}").shuffle(order)
    time.sleep(max(0.0, float(start_at) - time.time()))
    for message in order:
        attempt = Delivery(lifecycle, RecordingBroker(), message, redelivered=thread % 2 == 1).begin()
        if attempt is not None:
            with lock:
                started.append([attempt.run_id, attempt.token, attempt.lease.holder])

threads = [threading.Thread(target=deliver, args=(t,)) for t in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(started))
'''


def test_processes_racing_to_start_the_same_slot_runs_start_each_once_under_its_untouched_reservation(
        harness: Harness, tmp_path: Path) -> None:
    fresh, renewed = 40, 20
    for n in range(fresh + renewed):
        harness.job(f"race{n}", handler="noop")
    messages = [harness.slot(f"race{n}") for n in range(renewed)]  # their reservations end soonest
    harness.clock.advance(LEASE_S * 0.6)
    messages += [harness.slot(f"race{n}") for n in range(renewed, renewed + fresh)]
    reserved = {f"race{n}": harness.job_doc(f"race{n}")["lease"] for n in range(fresh + renewed)}
    path = tmp_path / "messages.json"
    path.write_text(json.dumps([[run_id, message.kwargs["job_id"], message.options[SNAPSHOT_OPTION]]
                                for run_id, message in messages]))
    settings = harness.settings
    start_at = time.time() + 3
    racers = [subprocess.Popen([sys.executable, "-c", RACER, settings.mongodb_uri, settings.mongodb_db,
                                settings.runs_queue, f"racer:{n}", str(LEASE_S), harness.clock.now().isoformat(),
                                str(start_at), str(path)], stdout=subprocess.PIPE, cwd=ROOT, text=True)
              for n in range(4)]
    reports = [json.loads(racer.communicate(timeout=300)[0]) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)

    starts = Counter(run_id for report in reports for run_id, _token, _holder in report)
    assert set(starts) == {run_id for run_id, _ in messages} and set(starts.values()) == {1}
    for n, (run_id, _message) in enumerate(messages):
        run, job = harness.run(run_id), harness.job_doc(f"race{n}")
        lease = job["lease"]
        assert (run["status"], run["attempt"]) == ("running", 1)
        assert (lease["holder"], lease["token"]) == (reservation_holder(run_id), reserved[f"race{n}"]["token"])
        assert (run["lease_holder"], run["lease_token"]) == (lease["holder"], lease["token"])
        if n < renewed:  # renewed before its start: half a lease was no longer left
            assert lease["expires_at"] > reserved[f"race{n}"]["expires_at"]
        else:
            assert lease == reserved[f"race{n}"]
