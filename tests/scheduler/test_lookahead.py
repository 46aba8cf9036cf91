"""Planning ahead (``SCHEDULER_LOOKAHEAD_MS``): the leader writes a slot's run and
advances its job before the slot, publishes it at the instant, and withdraws it when
the job is changed, disabled, deleted or put in a maintenance window inside the
lookahead. Against the real store and RabbitMQ, the clock moved by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from cronhive.domain import utcnow
from cronhive.leases import reservation_holder
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.slots import slot_run_id
from cronhive.snapshots import SNAPSHOT_OPTION, JobSnapshot
from cronhive.store import MongoStore
from cronhive.windows import MaintenanceWindow
from tests.scheduler.conftest import FakeClock, create_job

Messages = Callable[[], list[dict[str, Any]]]
MINUTELY = "0 * * * * *"  # second 0 of every minute
LOOKAHEAD_S = 3.0


def runs_of(store: MongoStore, job_id: str) -> list[dict[str, Any]]:
    return list(store.runs.find({"job_id": job_id}).sort("scheduled_for", 1))


def published_once(messages: Messages, run_id: str) -> JobSnapshot:
    """The snapshot of the one message now on the queue, which is ``run_id``'s."""
    (body,) = messages()
    snapshot = JobSnapshot.from_option(body["options"][SNAPSHOT_OPTION])
    assert body["args"] == [run_id] and snapshot is not None
    return snapshot


def planned_ahead(store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock,
                  job_id: str, **fields: Any) -> tuple[Dispatcher, dict[str, Any], str]:
    """A job whose next slot is 2 s away, planned by a dispatcher with a 3 s lookahead."""
    job = create_job(store, job_id, MINUTELY, **fields)
    slot = job["next_fire_at"]
    dispatcher = make_dispatcher(lookahead_s=LOOKAHEAD_S)
    clock.set(slot - timedelta(seconds=2))
    dispatcher.run_pass()
    return dispatcher, job, slot_run_id(job_id, slot)


def test_a_slot_is_planned_ahead_and_published_at_its_instant(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    dispatcher, job, run_id = planned_ahead(store, make_dispatcher, clock, "ahead", args={"v": 1})
    slot = job["next_fire_at"]
    (run,) = runs_of(store, "ahead")
    assert (run["_id"], run["status"], run["scheduled_for"]) == (run_id, "pending", slot)
    stored = store.jobs.find_one({"_id": "ahead"})
    assert stored["next_fire_at"] == slot + timedelta(minutes=1)  # advanced before the slot
    assert stored["lease"]["holder"] == reservation_holder(run_id)
    assert stored["lease"]["expires_at"] == slot + timedelta(seconds=30)  # a whole lease after the slot
    assert messages() == [] and dispatcher.wake_at() == slot

    clock.set(slot - timedelta(milliseconds=500))
    assert dispatcher.run_pass().published == 0 and messages() == []  # never before the slot
    clock.set(slot + timedelta(milliseconds=5))
    result = dispatcher.run_pass()
    assert (result.fired, result.published, result.planned) == (1, 1, 0)  # only publishing was left
    (body,) = messages()
    assert body["args"] == [run_id]
    snapshot = JobSnapshot.from_option(body["options"][SNAPSHOT_OPTION])
    assert snapshot is not None and snapshot.args == {"v": 1} and snapshot.slot == slot
    assert store.runs.find_one({"_id": run_id})["status"] == "queued"
    assert dispatcher.wake_at() is None
    assert dispatcher.run_pass().published == 0 and messages() == []  # once


def test_a_job_changed_inside_the_lookahead_fires_its_slot_as_it_is_now(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    dispatcher, job, run_id = planned_ahead(store, make_dispatcher, clock, "changed", args={"v": 1})
    slot = job["next_fire_at"]
    changed = store.update_job("changed", {"args": {"v": 2}}, clock.now())

    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    (body,) = messages()  # withdrawn, planned again at once: still one run, published once
    snapshot = JobSnapshot.from_option(body["options"][SNAPSHOT_OPTION])
    assert body["args"] == [run_id] and snapshot is not None
    assert (snapshot.args, snapshot.revision) == ({"v": 2}, changed.revision)
    (run,) = runs_of(store, "changed")
    assert run["status"] == "queued" and run["scheduled_for"] == slot
    stored = store.jobs.find_one({"_id": "changed"})
    assert stored["next_fire_at"] == slot + timedelta(minutes=1)
    assert stored["lease"]["holder"] == reservation_holder(run_id) and stored["lease"]["token"] == run["lease_token"]



def test_a_job_changed_again_while_its_planned_run_is_withdrawn_still_fires_its_slot(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader read the changed job, then another change landed before it moved the
    job back to the withdrawn slot: the move is retried on the job as it is now, so
    the slot still gets its one run (it had neither a run nor a job waiting for it)."""
    dispatcher, job, run_id = planned_ahead(store, make_dispatcher, clock, "twice", args={"v": 1})
    slot = job["next_fire_at"]
    store.update_job("twice", {"args": {"v": 2}}, clock.now())
    withdraw = store.withdraw_planned_run

    def changed_meanwhile(*args: Any, **kwargs: Any) -> bool:
        store.update_job("twice", {"args": {"v": 3}}, clock.now())
        return withdraw(*args, **kwargs)

    monkeypatch.setattr(store, "withdraw_planned_run", changed_meanwhile)
    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    monkeypatch.undo()
    dispatcher.run_pass()
    assert published_once(messages, run_id).args == {"v": 3}
    (run,) = runs_of(store, "twice")
    assert run["scheduled_for"] == slot and run["status"] == "queued"
    assert store.jobs.find_one({"_id": "twice"})["next_fire_at"] == slot + timedelta(minutes=1)

def test_a_job_disabled_inside_the_lookahead_does_not_fire_and_keeps_the_slot_for_its_misfire_policy(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    dispatcher, job, run_id = planned_ahead(store, make_dispatcher, clock, "paused")
    slot = job["next_fire_at"]
    store.update_job("paused", {"enabled": False}, clock.now())

    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    assert messages() == [] and runs_of(store, "paused") == []
    stored = store.jobs.find_one({"_id": "paused"})
    assert (stored["next_fire_at"], stored["due_at"], stored["lease"]) == (slot, None, None)  # as if never planned

    clock.set(slot + timedelta(seconds=10))
    store.update_job("paused", {"enabled": True}, clock.now())  # fire_once: the missed slot runs once now
    dispatcher.run_pass()
    (body,) = messages()
    assert body["args"] == [run_id] and runs_of(store, "paused")[0]["status"] == "queued"


def test_a_job_deleted_inside_the_lookahead_never_fires_nor_touches_its_successor(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    dispatcher, job, _run_id = planned_ahead(store, make_dispatcher, clock, "gone")
    slot = job["next_fire_at"]
    store.delete_job("gone", clock.now())
    create_job(store, "gone", "0 0 1 1 *")  # the same id again, another incarnation

    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    assert messages() == [] and runs_of(store, "gone") == []
    stored = store.jobs.find_one({"_id": "gone"})
    assert stored["lease"] is None and stored["next_fire_at"] > slot


def test_a_maintenance_window_opened_inside_the_lookahead_records_the_slot_skipped(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    dispatcher, job, run_id = planned_ahead(store, make_dispatcher, clock, "held", tags=["db"])
    slot = job["next_fire_at"]
    store.create_window(MaintenanceWindow("mw_1", clock.now(), slot + timedelta(minutes=5), tags=("db",),
                                          created_at=clock.now()))

    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    assert messages() == []
    (run,) = runs_of(store, "held")
    assert (run["_id"], run["status"], run["error"]["type"]) == (run_id, "skipped", "maintenance")
    assert store.jobs.find_one({"_id": "held"})["lease"] is None


def test_a_job_whose_lease_is_held_is_not_planned_ahead_and_is_decided_at_its_instant(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    job = create_job(store, "busy", MINUTELY)
    slot = job["next_fire_at"]
    store.jobs.update_one({"_id": "busy"}, {"$set": {"lease": {
        "holder": "worker:9", "run_id": "run_long", "token": 4, "expires_at": slot + timedelta(seconds=20)},
        "lease_term": 4}})
    dispatcher = make_dispatcher(lookahead_s=LOOKAHEAD_S)
    clock.set(slot - timedelta(seconds=2))
    result = dispatcher.run_pass()
    assert runs_of(store, "busy") == [] and not result.more  # left for its instant, without spinning
    store.jobs.update_one({"_id": "busy"}, {"$set": {"lease": None}})  # the long run ended before the slot

    clock.set(slot + timedelta(milliseconds=5))
    dispatcher.run_pass()
    (body,) = messages()
    assert body["args"] == [slot_run_id("busy", slot)]


def test_a_new_leader_publishes_what_a_dead_leader_planned_ahead_at_its_instant_once(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    _dead, job, run_id = planned_ahead(store, make_dispatcher, clock, "handed")
    slot = job["next_fire_at"]
    successor = make_dispatcher(term=2, lookahead_s=LOOKAHEAD_S)
    successor.take_over()
    clock.set(slot - timedelta(seconds=1))
    successor.run_pass()
    assert messages() == [] and store.runs.find_one({"_id": run_id})["status"] == "pending"  # held, not early
    assert successor.wake_at() == slot

    clock.set(slot + timedelta(milliseconds=5))
    successor.run_pass()
    successor.run_pass()
    assert [body["args"] for body in messages()] == [[run_id]]
    assert store.runs.find_one({"_id": run_id})["status"] == "queued"


def test_a_leader_dying_while_it_withdraws_a_planned_run_leaves_the_slot_to_the_next_one(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The leader moved the changed job back to the slot and died before deleting the
    run it had planned: the next leader finds a draft (a pending run whose job waits for
    its slot), deletes it and plans the slot again — one run, as the job is now."""
    dying, job, run_id = planned_ahead(store, make_dispatcher, clock, "dies", args={"v": 1})
    slot = job["next_fire_at"]
    store.update_job("dies", {"args": {"v": 2}}, clock.now())

    class Died(Exception):
        pass

    def die(*args: Any, **kwargs: Any) -> Any:
        raise Died()

    monkeypatch.setattr(store.runs, "delete_one", die)  # the process dies right after the job's move back
    clock.set(slot + timedelta(milliseconds=5))
    try:
        dying.run_pass()
    except Died:
        pass
    monkeypatch.undo()
    assert store.jobs.find_one({"_id": "dies"})["next_fire_at"] == slot  # the job waits for the slot again
    assert [run["_id"] for run in runs_of(store, "dies")] == [run_id] and messages() == []

    successor = make_dispatcher(term=2)
    successor.take_over()
    successor.run_pass()
    successor.run_pass()
    assert published_once(messages, run_id).args == {"v": 2}
    (run,) = runs_of(store, "dies")
    assert run["status"] == "queued"


def test_a_herd_is_planned_ahead_in_batches_and_published_together_at_the_instant(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    at = utcnow()
    jobs = [create_job(store, f"herd_{i}", MINUTELY, at=at) for i in range(25)]
    slot = jobs[0]["next_fire_at"]
    dispatcher = make_dispatcher(lookahead_s=LOOKAHEAD_S, batch=10)
    clock.set(slot - timedelta(seconds=2))
    passes = 1
    while dispatcher.run_pass().more:
        passes += 1
    assert passes == 3 and len(dispatcher.planned) == 25 and messages() == []

    clock.set(slot + timedelta(milliseconds=5))
    result = dispatcher.run_pass()
    assert result.published == 25 and result.planned == 0
    assert sorted(body["args"][0] for body in messages()) == sorted(slot_run_id(j["_id"], slot) for j in jobs)


def test_a_leader_stepping_down_hands_its_planned_slots_back_to_their_jobs(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    dispatcher, job, run_id = planned_ahead(store, make_dispatcher, clock, "handback")
    slot = job["next_fire_at"]
    assert dispatcher.withdraw_planned() == 1
    assert runs_of(store, "handback") == [] and dispatcher.planned == []
    stored = store.jobs.find_one({"_id": "handback"})
    assert (stored["next_fire_at"], stored["due_at"], stored["lease"]) == (slot, slot, None)

    successor = make_dispatcher(term=2)  # plans the slot itself, at its instant
    clock.set(slot + timedelta(milliseconds=5))
    successor.run_pass()
    assert [body["args"] for body in messages()] == [[run_id]]


def test_a_planned_run_coming_due_while_a_new_leader_publishes_its_backlog_is_published_once(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], flaky: Any, clock: FakeClock,
        messages: Messages) -> None:
    """A new leader's backlog pass holds a dead leader's run planned for a slot still
    ahead; when that slot comes while the pass is still publishing older runs, the
    pass's next page must not publish the held run as well (it is the held list's)."""
    at = utcnow().replace(second=30, microsecond=0)
    first = create_job(store, "older", MINUTELY, at=at)
    slot = first["next_fire_at"]
    second = create_job(store, "newer", "1 * * * * *", at=at)
    assert second["next_fire_at"] == slot + timedelta(seconds=1)
    dead = make_dispatcher(lookahead_s=LOOKAHEAD_S)
    clock.set(slot - timedelta(seconds=2))
    dead.run_pass()
    assert len(dead.planned) == 2  # both planned ahead, then the leader died

    class SlowPublisher:
        """Publishing the backlog takes until after the held run's slot."""
        url = flaky.url

        def publish_runs(self, runs: Any, *, snapshots: Any = None, behind: Any = ()) -> Any:
            published = flaky.publish_runs(runs, snapshots=snapshots, behind=behind)
            clock.advance(1.0)
            return published

    successor = make_dispatcher(term=2, lookahead_s=LOOKAHEAD_S, publisher=SlowPublisher())
    successor.take_over()
    clock.set(slot + timedelta(milliseconds=500))  # the older slot is due, the newer one still ahead
    successor.run_pass()
    successor.run_pass()
    assert sorted(body["args"][0] for body in messages()) == sorted(
        [slot_run_id("older", slot), slot_run_id("newer", slot + timedelta(seconds=1))])
    assert {run["status"] for run in store.runs.find({})} == {"queued"}


def test_a_crowd_due_together_is_planned_further_ahead_and_a_few_jobs_only_the_lookahead(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    """A herd on one slot takes time to plan (its runs written, its jobs advanced): the
    horizon stretches by twice the measured time it takes, so the herd is planned before
    its instant and only publishing is left then; a few jobs stay with the lookahead."""
    created = utcnow()
    few = [create_job(store, f"few_{n}", MINUTELY, at=created) for n in range(3)]
    slot = few[0]["next_fire_at"]
    dispatcher = make_dispatcher(lookahead_s=LOOKAHEAD_S, batch=500)
    assert dispatcher.plan_from(slot) == slot - timedelta(seconds=LOOKAHEAD_S)  # 3 jobs: nothing to stretch

    herd = [f"herd_{n:03d}" for n in range(120)]
    for job_id in herd:
        create_job(store, job_id, MINUTELY, at=created)
    dispatcher.plan_cost_s = 0.01  # as if measured: 123 jobs take 1.23 s to plan
    start = dispatcher.plan_from(slot)
    assert start == slot - timedelta(seconds=LOOKAHEAD_S + 123 * 0.01 * 2)
    clock.set(start + timedelta(milliseconds=10))  # before the lookahead, inside the stretched horizon
    dispatcher.run_pass()
    assert len(dispatcher.planned) == 123 and messages() == []  # all planned ahead, none published early
    assert dispatcher.plan_cost_s != 0.01  # the pass was measured (123 jobs planned ahead)
    dispatcher.plan_cost_s = 0.01
    after = slot + timedelta(minutes=1)  # the next minute's crowd: the same herd, stretched again
    assert dispatcher.plan_from(after) == after - timedelta(seconds=LOOKAHEAD_S + 123 * 0.01 * 2)

    clock.set(slot + timedelta(milliseconds=5))
    result = dispatcher.run_pass()
    assert (result.published, result.planned) == (123, 0)
    assert len(messages()) == 123


def test_a_lookahead_of_zero_never_stretches(store: MongoStore, make_dispatcher: Callable[..., Dispatcher]) -> None:
    created = utcnow()
    jobs = [create_job(store, f"zero_{n:03d}", MINUTELY, at=created) for n in range(100)]
    dispatcher = make_dispatcher(lookahead_s=0.0)
    dispatcher.plan_cost_s = 1.0
    slot = jobs[0]["next_fire_at"]
    assert dispatcher.plan_from(slot) == slot and dispatcher.horizon == timedelta(0)
