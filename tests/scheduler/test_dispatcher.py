"""scheduler/dispatcher.py against the real store and the real RabbitMQ (messages read
straight from the test's queue; no workers): one run per slot, queued only after the
confirm, unpublished runs re-published in order, and the overlap policies."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from cronhive.broker import BEHIND_OPTION, RUN_ACTOR, Published, RunPublisher
from cronhive.domain import new_run, utcnow
from cronhive.enums import Trigger
from cronhive.errors import StoreUnavailable
from cronhive.leases import reservation_holder
from cronhive.scheduler.dispatcher import MANUAL_PENDING_S, QUEUED_MARK_DELAY_S, Dispatcher, log_skipped
from cronhive.scheduler.leadership import LeadershipLost
from cronhive.settings import Settings
from cronhive.slots import slot_run_id
from cronhive.snapshots import SNAPSHOT_OPTION, JobSnapshot
from cronhive.store import MongoStore
from cronhive.store.documents import job_from_doc, run_to_doc
from tests import services
from tests.scheduler.conftest import FakeClock, FlakyPublisher, Term, create_job

Messages = Callable[[], list[dict[str, Any]]]


def runs_of(store: MongoStore, job_id: str) -> list[dict[str, Any]]:
    return list(store.runs.find({"job_id": job_id}).sort("scheduled_for", 1))


def run_doc(job: dict[str, Any], run_id: str, trigger: Trigger, scheduled_for: datetime, now: datetime,
            **fields: Any) -> dict[str, Any]:
    """A run document as `new_run` first writes it (through the store edge), ``fields`` changed."""
    return run_to_doc(replace(new_run(job_from_doc(job), run_id, trigger, scheduled_for, now, None), **fields))


def published_ids(messages: Messages) -> list[str]:
    return [message["args"][0] for message in messages()]


def test_every_slot_gets_exactly_one_run_published_once(store: MongoStore, make_dispatcher: Callable[..., Dispatcher],
                                                        clock: FakeClock, messages: Messages) -> None:
    at = utcnow()  # one creation instant: created across a second boundary, they would not share slots
    jobs = [create_job(store, f"every_{i}", at=at, misfire_policy="fire_all", overlap_policy="allow")
            for i in range(3)]
    first = jobs[0]["next_fire_at"]
    dispatcher = make_dispatcher(term=7)
    clock.set(first + timedelta(seconds=2, milliseconds=500))
    result = dispatcher.run_pass()
    assert result.fired == 9 and result.published == 9 and not result.more
    clock.advance(0.2)
    assert dispatcher.run_pass().planned == 0  # nothing new is due: nothing twice

    bodies = messages()
    assert Counter(body["args"][0] for body in bodies) == Counter({run["_id"]: 1 for run in store.runs.find()})
    assert {body["actor_name"] for body in bodies} == {RUN_ACTOR}
    for job in jobs:
        runs = runs_of(store, job["_id"])
        assert [run["scheduled_for"] for run in runs] == [first + timedelta(seconds=s) for s in range(3)]
        for run in runs:
            assert run["_id"] == slot_run_id(job["_id"], run["scheduled_for"])
            assert (run["status"], run["trigger"], run["sched_term"]) == ("queued", "schedule", 7)
            assert run["queued_at"] == clock.now() - timedelta(seconds=0.2)
        stored = store.jobs.find_one({"_id": job["_id"]})
        assert stored["next_fire_at"] == first + timedelta(seconds=3) == stored["due_at"]
        assert stored["last_triggered_at"] == clock.now() - timedelta(seconds=0.2)
        assert stored["sched_term"] == 7
    assert [body["kwargs"]["job_id"] for body in bodies[:3]] == ["every_0", "every_1", "every_2"]  # slot order


def test_a_run_is_pending_while_published_and_queued_only_after_the_confirm(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, flaky: FlakyPublisher,
        messages: Messages) -> None:
    job = create_job(store, "confirmed", overlap_policy="allow")
    clock.set(job["next_fire_at"] + timedelta(milliseconds=3))
    make_dispatcher().run_pass()
    (run,) = runs_of(store, "confirmed")
    assert flaky.seen_status == [(run["_id"], "pending")]
    assert run["status"] == "queued" and published_ids(messages) == [run["_id"]]


def test_the_queued_mark_comes_a_delay_after_the_confirm_and_only_for_runs_still_pending(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    for job_id in ("started", "waiting"):
        job = create_job(store, job_id, schedule="*/30 * * * * *", overlap_policy="allow")
    clock.set(job["next_fire_at"] + timedelta(milliseconds=3))
    confirmed_at = clock.now()
    dispatcher = make_dispatcher(mark_delay_s=QUEUED_MARK_DELAY_S)
    dispatcher.run_pass()
    (started,), (waiting,) = runs_of(store, "started"), runs_of(store, "waiting")
    assert {started["status"], waiting["status"]} == {"pending"}
    store.runs.update_one({"_id": started["_id"]}, {"$set": {"status": "running", "attempt": 1}})  # a worker's start
    clock.advance(QUEUED_MARK_DELAY_S - 1)
    dispatcher.run_pass()
    assert runs_of(store, "waiting")[0]["status"] == "pending"
    clock.advance(1)
    dispatcher.run_pass()
    (started,), (waiting,) = runs_of(store, "started"), runs_of(store, "waiting")
    assert (waiting["status"], waiting["queued_at"]) == ("queued", confirmed_at)
    assert (started["status"], started.get("queued_at")) == ("running", None)  # its start was its mark
    assert sorted(published_ids(messages)) == sorted([started["_id"], waiting["_id"]])


def test_confirmed_runs_are_marked_before_a_backlog_pass_and_on_stepping_down_so_none_is_published_again(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "marked", schedule="*/5 * * * * *", overlap_policy="allow")
    clock.set(job["next_fire_at"] + timedelta(milliseconds=3))
    dispatcher = make_dispatcher(mark_delay_s=QUEUED_MARK_DELAY_S)
    dispatcher.run_pass()
    dispatcher.backlog = True  # what BACKLOG_SCAN_S does in a running scheduler
    dispatcher.run_pass()
    assert [run["status"] for run in runs_of(store, "marked")] == ["queued"]
    clock.advance(5)
    dispatcher.run_pass()
    assert [run["status"] for run in runs_of(store, "marked")] == ["queued", "pending"]
    dispatcher.withdraw_planned()
    assert [run["status"] for run in runs_of(store, "marked")] == ["queued", "queued"]
    assert Counter(published_ids(messages)) == {run["_id"]: 1 for run in runs_of(store, "marked")}


def test_rabbitmq_down_keeps_runs_pending_and_publishes_them_in_order_on_return(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, flaky: FlakyPublisher,
        messages: Messages) -> None:
    job = create_job(store, "outage", misfire_policy="fire_all", overlap_policy="allow")
    start = job["next_fire_at"]
    dispatcher = make_dispatcher()
    flaky.down = True
    for second in range(4):  # four slots while RabbitMQ is away
        clock.set(start + timedelta(seconds=second, milliseconds=5))
        dispatcher._broker_retry_at = 0.0  # retry now (the backoff is wall-clock)
        dispatcher.run_pass()
    assert dispatcher.backlog and dispatcher.broker_down
    runs = runs_of(store, "outage")
    assert [run["status"] for run in runs] == ["pending"] * 4
    assert store.jobs.find_one({"_id": "outage"})["next_fire_at"] == start + timedelta(seconds=4)  # committed anyway
    assert messages() == []

    flaky.down = False
    clock.set(start + timedelta(seconds=4, milliseconds=5))
    dispatcher._broker_retry_at = 0.0
    result = dispatcher.run_pass()
    assert result.published == 5 and not dispatcher.backlog and not dispatcher.broker_down
    assert published_ids(messages) == [run["_id"] for run in runs_of(store, "outage")]  # oldest first
    assert {run["status"] for run in runs_of(store, "outage")} == {"queued"}


def test_rabbitmq_unreachable_for_real_raises_no_error_and_keeps_the_slot(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, settings, messages) -> None:
    from cronhive.broker import RunPublisher

    dead = RunPublisher.open(settings.replace(rabbitmq_url="amqp://guest:guest@127.0.0.1:1/%2F"))
    try:
        job = create_job(store, "unreachable", overlap_policy="allow")
        clock.set(job["next_fire_at"] + timedelta(milliseconds=2))
        dispatcher = make_dispatcher(publisher=dead)
        assert dispatcher.run_pass().published == 0
        assert dispatcher.broker_down and dispatcher.broker_retry_in() > 0
        assert runs_of(store, "unreachable")[0]["status"] == "pending"
    finally:
        dead.close()


def test_a_new_leader_republishes_what_a_dead_leader_committed_but_never_confirmed(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, flaky: FlakyPublisher,
        messages: Messages) -> None:
    jobs = [create_job(store, f"orphaned_{i}", overlap_policy="allow") for i in range(3)]
    clock.set(jobs[0]["next_fire_at"] + timedelta(milliseconds=5))
    flaky.down = True
    make_dispatcher(term=1).run_pass()  # committed, then "died" before any confirm
    flaky.down = False
    successor = make_dispatcher(term=2)
    clock.advance(0.5)
    result = successor.run_pass()
    assert result.published == 3
    runs = list(store.runs.find())
    assert {(run["status"], run["sched_term"]) for run in runs} == {("queued", 2)}
    assert sorted(published_ids(messages)) == sorted(run["_id"] for run in runs)


def test_a_dead_leaders_drafts_are_replanned_not_published(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    """A leader that inserted runs but died before advancing the job left drafts: the slot
    is still due, so the successor plans it again (the same run id) and publishes it once;
    a draft of a slot the successor's plan coalesces away is deleted."""
    job = create_job(store, "drafty", overlap_policy="allow")  # fire_once
    slot = job["next_fire_at"]
    for at in (slot, slot + timedelta(seconds=1)):
        store.runs.insert_one(run_doc(job, slot_run_id("drafty", at), Trigger.SCHEDULE, at, slot, sched_term=1))
    clock.set(slot + timedelta(seconds=3, milliseconds=5))
    make_dispatcher(term=2).run_pass()
    runs = runs_of(store, "drafty")
    assert [(run["scheduled_for"], run["status"]) for run in runs] == [(slot + timedelta(seconds=3), "queued")]
    assert published_ids(messages) == [runs[0]["_id"]]


def test_a_draft_found_while_dispatching_is_adopted(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "adopted", overlap_policy="allow")
    slot = job["next_fire_at"]
    run_id = slot_run_id("adopted", slot)
    store.runs.insert_one(run_doc(job, run_id, Trigger.SCHEDULE, slot, slot, sched_term=1))
    dispatcher = make_dispatcher(term=2)
    dispatcher.backlog = False
    dispatcher._next_scan = float("inf")
    clock.set(slot + timedelta(milliseconds=5))
    assert dispatcher.run_pass().published == 1
    (run,) = runs_of(store, "adopted")
    assert (run["_id"], run["status"], run["sched_term"]) == (run_id, "queued", 2)
    assert published_ids(messages) == [run_id]


def test_forbid_records_a_slot_skipped_while_another_run_holds_the_lease(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "busy")
    slot = job["next_fire_at"]
    store.jobs.update_one({"_id": "busy"}, {"$set": {"lease": {
        "holder": "worker:9", "run_id": "run_other", "token": 3, "expires_at": slot + timedelta(seconds=60)},
        "lease_term": 3}})
    clock.set(slot + timedelta(milliseconds=5))
    result = make_dispatcher().run_pass()
    assert (result.fired, result.skipped) == (0, 1)
    (run,) = runs_of(store, "busy")
    assert run["status"] == "skipped" and run["error"]["type"] == "overlap" and "worker:9" in run["error"]["message"]
    assert run["finished_at"] == clock.now()
    assert messages() == []
    stored = store.jobs.find_one({"_id": "busy"})
    assert stored["lease"]["holder"] == "worker:9" and stored["next_fire_at"] == slot + timedelta(seconds=1)


def test_forbid_reserves_the_free_lease_for_the_run_it_publishes(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "free", misfire_policy="skip", args={"report": "daily", "to": ["ops"]}, max_retries=2)
    clock.set(job["next_fire_at"] + timedelta(seconds=1, milliseconds=5))
    make_dispatcher(job_lease_s=30).run_pass()
    missed, fired = runs_of(store, "free")  # skip: the missed slot is recorded, the latest runs
    lease = store.jobs.find_one({"_id": "free"})["lease"]
    assert lease["holder"] == reservation_holder(fired["_id"]) and lease["run_id"] == fired["_id"]
    assert lease["token"] == fired["lease_token"] == 1
    assert lease["expires_at"] == clock.now() + timedelta(seconds=30)
    assert (missed["status"], fired["status"]) == ("skipped", "queued")
    (body,) = messages()
    assert body["args"] == [fired["_id"]]
    # the job's snapshot rides along: the worker starts the run without reading (cronhive.snapshots)
    snapshot = JobSnapshot.from_option(body["options"][SNAPSHOT_OPTION])
    assert snapshot is not None
    assert (snapshot.job_id, snapshot.handler, snapshot.reserved_token) == ("free", "noop", 1)
    assert (snapshot.args, snapshot.max_retries) == ({"report": "daily", "to": ["ops"]}, 2)  # the job as stored
    assert (snapshot.revision, snapshot.incarnation) == (job["revision"], job["incarnation"])
    assert snapshot.slot == fired["scheduled_for"] and snapshot.timeout_s == job["timeout_s"]


def test_fire_all_under_forbid_publishes_every_missed_slot_behind_the_reserved_one(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "queue", misfire_policy="fire_all")
    clock.set(job["next_fire_at"] + timedelta(seconds=1, milliseconds=5))
    make_dispatcher(job_lease_s=30).run_pass()
    first, second = runs_of(store, "queue")
    lease = store.jobs.find_one({"_id": "queue"})["lease"]
    assert lease["holder"] == reservation_holder(first["_id"]) and lease["token"] == first["lease_token"] == 1
    assert (first["status"], second["status"]) == ("queued", "queued") and second["lease_token"] is None
    bodies = messages()
    assert [body["args"][0] for body in bodies] == [first["_id"], second["_id"]]  # oldest first; the second waits
    # the reserved one is the queue's head: it starts from its snapshot; the one behind it
    # waits for the head to hand the lease on, so its own message is acknowledged unread
    assert [SNAPSHOT_OPTION in body["options"] for body in bodies] == [True, False]
    assert [body["options"].get(BEHIND_OPTION, False) for body in bodies] == [False, True]
    snapshot = JobSnapshot.from_option(bodies[0]["options"][SNAPSHOT_OPTION])
    assert snapshot is not None and snapshot.queues_slots and snapshot.reserved_token == 1


def test_fire_all_under_forbid_reserves_no_new_slot_while_older_slots_wait(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    """A backlog (after a failover): the first catch-up run ended and freed the lease while
    the second still waits. The next slot does not reserve the free lease — it would
    wait for the older slot, and the older slot for its reservation to expire (the
    failover bench saw such waits a lease long) — and once none waits, a slot reserves
    it again."""
    job = create_job(store, "queue", misfire_policy="fire_all")
    clock.set(job["next_fire_at"] + timedelta(seconds=1, milliseconds=5))
    dispatcher = make_dispatcher(job_lease_s=30)
    dispatcher.run_pass()
    first, second = runs_of(store, "queue")
    store.runs.update_one({"_id": first["_id"]}, {"$set": {"status": "succeeded"}})
    store.jobs.update_one({"_id": "queue"}, {"$set": {"lease": None}})  # the first run released it
    messages()

    clock.set(second["scheduled_for"] + timedelta(seconds=1, milliseconds=5))
    dispatcher.run_pass()
    third = runs_of(store, "queue")[2]
    assert (third["status"], third["lease_token"]) == ("queued", None)
    assert store.jobs.find_one({"_id": "queue"})["lease"] is None  # left for the oldest waiting run
    bodies = messages()
    assert [body["args"][0] for body in bodies] == [third["_id"]]
    assert bodies[0]["options"].get(BEHIND_OPTION) is True  # behind the waiting second: handed on to

    store.runs.update_many({"_id": {"$in": [second["_id"], third["_id"]]}}, {"$set": {"status": "succeeded"}})
    clock.set(third["scheduled_for"] + timedelta(seconds=1, milliseconds=5))
    dispatcher.run_pass()
    fourth = runs_of(store, "queue")[3]
    lease = store.jobs.find_one({"_id": "queue"})["lease"]
    assert lease["holder"] == reservation_holder(fourth["_id"]) and fourth["lease_token"] == lease["token"]
    assert [BEHIND_OPTION in body["options"] for body in messages()] == [False]  # the head again


def test_buffer_one_publishes_one_waiting_run_and_skips_beyond_it(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "buffered", overlap_policy="buffer_one")
    slot = job["next_fire_at"]
    store.jobs.update_one({"_id": "buffered"}, {"$set": {"lease": {
        "holder": "worker:9", "run_id": "run_other", "token": 1, "expires_at": slot + timedelta(seconds=60)},
        "lease_term": 1}})
    dispatcher = make_dispatcher()
    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    clock.set(slot + timedelta(seconds=1, milliseconds=5))
    dispatcher.run_pass()
    waiting, skipped = runs_of(store, "buffered")
    assert store.jobs.find_one({"_id": "buffered"})["buffered_run_id"] == waiting["_id"]
    assert (waiting["status"], skipped["status"], skipped["error"]["type"]) == ("queued", "skipped", "overlap")
    assert published_ids(messages) == [waiting["_id"]]


def test_allow_publishes_even_while_a_run_holds_the_lease(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "overlapping", overlap_policy="allow")
    slot = job["next_fire_at"]
    store.jobs.update_one({"_id": "overlapping"}, {"$set": {"lease": {
        "holder": "worker:9", "run_id": "run_other", "token": 1, "expires_at": slot + timedelta(seconds=60)}}})
    clock.set(slot + timedelta(milliseconds=5))
    make_dispatcher().run_pass()
    (run,) = runs_of(store, "overlapping")
    assert run["status"] == "queued" and run["lease_token"] is None
    assert store.jobs.find_one({"_id": "overlapping"})["lease"]["holder"] == "worker:9"
    (body,) = messages()
    assert body["args"] == [run["_id"]] and SNAPSHOT_OPTION not in body["options"]  # no reservation to take over


def test_a_job_changed_while_being_dispatched_is_planned_again(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job = create_job(store, "racing", overlap_policy="allow")
    slot = job["next_fire_at"]
    real_due_jobs = store.due_jobs

    def stale_read(now, limit):  # type: ignore[no-untyped-def]
        docs = real_due_jobs(now, limit)
        store.jobs.update_one({"_id": "racing"}, {"$set": {"name": "renamed"}, "$inc": {"revision": 1}})
        return docs

    monkeypatch.setattr(store, "due_jobs", stale_read)
    dispatcher = make_dispatcher()
    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    assert runs_of(store, "racing") == [] and messages() == []  # the draft was withdrawn
    monkeypatch.setattr(store, "due_jobs", real_due_jobs)
    dispatcher.run_pass()
    (run,) = runs_of(store, "racing")
    assert run["scheduled_for"] == slot and run["status"] == "queued"
    assert published_ids(messages) == [run["_id"]]


def test_a_job_whose_schedule_can_no_longer_be_computed_is_disabled_and_the_rest_fire(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    broken = create_job(store, "broken", overlap_policy="allow")
    create_job(store, "healthy", overlap_policy="allow")
    store.jobs.update_one({"_id": "broken"}, {"$set": {"timezone": "Atlantis/Lost_City"}})
    clock.set(broken["next_fire_at"] + timedelta(milliseconds=5))
    dispatcher = make_dispatcher(term=3)
    dispatcher.run_pass()
    stored = store.jobs.find_one({"_id": "broken"})
    assert stored["enabled"] is False and stored["due_at"] is None and stored["sched_term"] == 3
    assert "Atlantis/Lost_City" in stored["disabled_reason"]
    assert stored["revision"] == 2
    assert runs_of(store, "broken") == []
    assert [message["kwargs"]["job_id"] for message in messages()] == ["healthy"]


@pytest.mark.parametrize("change,field", [
    ({"$unset": {"schedule": ""}}, "schedule"),
    ({"$unset": {"name": ""}}, "name"),
    ({"$unset": {"handler": ""}}, "handler"),
    ({"$set": {"schedule": ["*/5 * * * *"]}}, "schedule"),
    ({"$set": {"overlap_policy": 7}}, "overlap_policy"),
], ids=["no-schedule", "no-name", "no-handler", "schedule-list", "policy-int"])
def test_a_corrupt_job_document_is_disabled_with_its_reason_never_fired_and_the_rest_fire(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages,
        caplog: pytest.LogCaptureFixture, change: dict[str, Any], field: str) -> None:
    at = utcnow()  # one creation instant: created across a second boundary, they would not share a slot
    broken = create_job(store, "broken", overlap_policy="allow", at=at)
    create_job(store, "healthy", overlap_policy="allow", at=at)
    store.jobs.update_one({"_id": "broken"}, change)
    clock.set(broken["next_fire_at"] + timedelta(milliseconds=5))
    dispatcher = make_dispatcher(term=3)
    with caplog.at_level("WARNING", logger="cronhive.scheduler.dispatch"):
        dispatcher.run_pass()
        dispatcher.run_pass()  # disabled: not due any more, nothing more said
    stored = store.jobs.find_one({"_id": "broken"})
    assert stored["enabled"] is False and stored["due_at"] is None and stored["sched_term"] == 3
    assert stored["disabled_reason"].startswith(f"invalid job document: {field}: "), stored["disabled_reason"]
    assert runs_of(store, "broken") == []
    assert [message["kwargs"]["job_id"] for message in messages()] == ["healthy"]
    lines = [record for record in caplog.records if "disabled" in record.getMessage()]
    assert len(lines) == 1 and field in lines[0].getMessage() and lines[0].job_id == "broken"


def test_a_lost_leadership_stops_publishing_at_once(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    at = utcnow()  # one creation instant: created across a second boundary, they would not share a slot
    jobs = [create_job(store, f"fenced_{i}", at=at, overlap_policy="allow") for i in range(5)]
    dispatcher = make_dispatcher(publish_chunk=1)
    guard = dispatcher.guard
    real_publish = dispatcher.publisher.publish_runs

    def publish_then_lose(runs: Sequence[tuple[str, str]], **options: Any) -> Published:
        published = real_publish(runs, **options)
        guard.valid = False  # the local deadline passes after the first chunk
        return published

    dispatcher.publisher.publish_runs = publish_then_lose
    clock.set(jobs[0]["next_fire_at"] + timedelta(milliseconds=5))
    with pytest.raises(LeadershipLost):
        dispatcher.run_pass()
    assert len(messages()) == 1
    statuses = Counter(run["status"] for run in store.runs.find())
    assert statuses == Counter({"pending": 5})  # not even the queued mark was written


def test_the_backlog_pass_handles_old_manual_runs_and_runs_of_deleted_jobs(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "manual")
    now = clock.now()
    old = run_doc(job, "run_manual_old", Trigger.MANUAL, now, now - timedelta(seconds=MANUAL_PENDING_S + 1))
    young = run_doc(job, "run_manual_young", Trigger.MANUAL, now, now - timedelta(seconds=1))
    orphan = run_doc(job, "run_orphan", Trigger.SCHEDULE, now - timedelta(seconds=5), now, job_id="gone")
    store.runs.insert_many([old, young, orphan])
    make_dispatcher().run_pass()
    assert published_ids(messages) == ["run_manual_old"]
    assert store.runs.find_one({"_id": "run_manual_old"})["status"] == "queued"
    assert store.runs.find_one({"_id": "run_manual_young"})["status"] == "pending"  # the API may still be publishing it
    gone = store.runs.find_one({"_id": "run_orphan"})
    assert gone["status"] == "skipped" and gone["error"]["type"] == "job_deleted"


def test_a_full_batch_asks_to_come_back_at_once(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    jobs = [create_job(store, f"batch_{i}", overlap_policy="allow") for i in range(5)]
    clock.set(max(job["next_fire_at"] for job in jobs) + timedelta(milliseconds=5))
    dispatcher = make_dispatcher(batch=2)
    results = [dispatcher.run_pass() for _ in range(3)]
    assert [result.more for result in results] == [True, True, False]
    assert store.runs.count_documents({"status": "queued"}) == 5 == len(messages())


def pass_failing_at_the_slot(make_dispatcher: Callable[..., Dispatcher], clock: FakeClock,
                             job: dict[str, Any]) -> Dispatcher:
    """A leader, its backlog already handled, whose pass at ``job``'s slot loses MongoDB
    (the test made the store raise)."""
    dispatcher = make_dispatcher()
    dispatcher.backlog = False
    dispatcher._next_scan = float("inf")
    clock.set(job["next_fire_at"] + timedelta(milliseconds=5))
    with pytest.raises(StoreUnavailable):
        dispatcher.run_pass()
    return dispatcher


def test_runs_committed_by_a_pass_that_lost_mongodb_are_published_by_the_next(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job = create_job(store, "lost_reply", overlap_policy="allow")
    real_advance = store.advance_jobs

    def applied_but_reply_lost(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_advance(*args, **kwargs)
        raise StoreUnavailable("MongoDB is unreachable (reply lost)")

    monkeypatch.setattr(store, "advance_jobs", applied_but_reply_lost)
    dispatcher = pass_failing_at_the_slot(make_dispatcher, clock, job)
    assert messages() == [] and runs_of(store, "lost_reply")[0]["status"] == "pending"
    monkeypatch.setattr(store, "advance_jobs", real_advance)
    clock.advance(0.3)
    assert dispatcher.run_pass().published == 1  # found by the backlog pass: committed, never published
    (run,) = runs_of(store, "lost_reply")
    assert run["status"] == "queued" and published_ids(messages) == [run["_id"]]


def test_runs_confirmed_as_mongodb_went_away_are_marked_by_the_re_elected_leader_not_published_again(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RabbitMQ confirmed the slot's run, then its `queued` mark found MongoDB gone and
    leadership lapsed; the same process, elected again, marks it before its backlog
    pass, which would otherwise publish the still-pending run a second time."""
    job = create_job(store, "mark_lost", overlap_policy="allow")
    real_mark = store.mark_runs_queued

    def unreachable(*args: Any, **kwargs: Any) -> int:
        raise StoreUnavailable("MongoDB is unreachable")

    monkeypatch.setattr(store, "mark_runs_queued", unreachable)
    dispatcher = pass_failing_at_the_slot(make_dispatcher, clock, job)
    (run,) = runs_of(store, "mark_lost")
    assert run["status"] == "pending" and published_ids(messages) == [run["_id"]]

    monkeypatch.setattr(store, "mark_runs_queued", real_mark)
    dispatcher.step_down()
    dispatcher.take_over()
    dispatcher.run_pass()
    assert runs_of(store, "mark_lost")[0]["status"] == "queued"
    assert run["_id"] not in published_ids(messages)  # published once


def test_a_connection_dropped_with_confirms_in_flight_loses_no_run_and_repeats_only_the_unconfirmed(
        store: MongoStore, settings: Settings, clock: FakeClock, messages: Messages) -> None:
    """1,000 slot runs published 200 in flight at a time; RabbitMQ drops the publisher's
    connection while the first chunk's confirms are in flight. Every slot keeps one run; the confirmed are
    marked queued, the rest stay pending and the next passes publish them (oldest
    first); only messages in flight at the drop can be on the queue twice."""
    publisher = RunPublisher.open(settings, connection_name=f"cronhive-test-{uuid.uuid4().hex[:8]}")
    try:
        assert publisher.publish_runs([("run_warm_up", "none")]).failure is None  # connected
        rabbit_name = services.connection_named(publisher.connection_name)
        messages()
        jobs = [create_job(store, f"herd_{number:04d}", overlap_policy="allow") for number in range(1000)]
        pipelined = publisher._pipelined
        assert pipelined is not None
        send = pipelined._send
        drops: list[int] = []

        def send_then_drop(batch: Any) -> None:
            send(batch)  # in the I/O thread: the chunk is in flight, no confirm read yet
            if not drops:
                drops.append(len(batch.messages))
                services.close_connection(rabbit_name)  # the broker drops us before we read a confirm

        pipelined._send = send_then_drop  # type: ignore[method-assign]
        dispatcher = Dispatcher(store, publisher, clock, Term(1), job_lease_s=30.0, batch=1200, publish_chunk=200,
                                mark_delay_s=0.0)
        clock.set(max(job["next_fire_at"] for job in jobs) + timedelta(milliseconds=5))
        first = dispatcher.run_pass()
        assert first.fired == 1000 and first.published < 1000, "the drop cut the first pass short"
        queued_then = store.runs.count_documents({"status": "queued"})
        assert queued_then == first.published
        for _ in range(40):
            if store.runs.count_documents({"status": "pending"}) == 0:
                break
            time.sleep(0.6)  # the broker backoff (real time)
            dispatcher.run_pass()
        runs = list(store.runs.find())
        assert len(runs) == 1000 and {run["job_id"] for run in runs} == {job["_id"] for job in jobs}
        assert Counter(run["status"] for run in runs) == Counter({"queued": 1000})
        published = Counter(published_ids(messages))
        assert set(published) == {run["_id"] for run in runs}  # nothing lost
        repeated = [run_id for run_id, count in published.items() if count > 1]
        assert all(count == 2 for count in published.values() if count > 1)
        assert len(repeated) <= 1000 - queued_then  # only what was not confirmed before the drop
    finally:
        publisher.close()


def test_a_pass_logs_its_skipped_slots_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    skipped = {"overlap": [f"job_{number}" for number in range(300)], "misfire": ["job_1", "late"]}
    with caplog.at_level("INFO", logger="cronhive.scheduler.dispatch"):
        log_skipped(skipped, 7)
    [record] = caplog.records
    assert record.getMessage() == ("302 slot(s) recorded skipped (misfire 2, overlap 300) of job(s) "
                                   "job_0, job_1, job_2, job_3, job_4 and 296 more")
    assert record.counts == {"overlap": 300, "misfire": 2} and record.term == 7  # type: ignore[attr-defined]
    assert record.job_ids == ["job_0", "job_1", "job_2", "job_3", "job_4"]  # type: ignore[attr-defined]
