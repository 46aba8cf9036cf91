"""A fire_all job under forbid: its slots queue for the job's lease and run one after
another, oldest first — a slot behind older ones is acknowledged and started by the
hand-on of the run before it, and the reaper restarts a queue whose chain broke.
Against the real store, the clock moved by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

from dramatiq import Message

from cronhive.broker import BEHIND_OPTION, run_message
from cronhive.domain import Run, new_run, new_run_id
from cronhive.enums import LeaseScope, Trigger
from cronhive.leases import reservation_holder
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.worker.maintenance import Reaper
from cronhive.worker.middleware import RunLifecycle
from cronhive.worker.records import HANDED_ON
from tests.services import CommandCounter
from tests.worker.conftest import LEASE_S, Harness

FIRE_ALL = {"misfire_policy": "fire_all", "overlap_policy": "forbid"}


def waiting_slot(harness: Harness, job_id: str, slot: datetime, *, reserved: bool = False) -> tuple[str, Message]:
    """A slot run as the leader makes one of a fire_all job under forbid — the first with
    the job's lease reserved for it, those behind it without — and its message (a
    queued slot carries no snapshot)."""
    run_id = new_run_id(slot)
    now = harness.clock.now()
    lease = harness.store.claim_lease(LeaseScope.JOB, job_id, reservation_holder(run_id), LEASE_S, now,
                                      run_id=run_id) if reserved else None
    assert lease is not None or not reserved
    harness.store.insert_run(new_run(harness.store.get_job(job_id), run_id, Trigger.SCHEDULE, slot, now, lease))
    harness.store.mark_run_queued(run_id, harness.clock.now())
    return run_id, run_message(harness.settings.runs_queue, run_id, job_id)


def test_a_slot_behind_older_ones_is_acknowledged_and_started_when_the_lease_is_handed_on(harness: Harness) -> None:
    harness.job("queue", **FIRE_ALL)
    now = harness.clock.now()
    first, first_message = waiting_slot(harness, "queue", now - timedelta(seconds=3), reserved=True)
    second, second_message = waiting_slot(harness, "queue", now - timedelta(seconds=2))
    third, third_message = waiting_slot(harness, "queue", now - timedelta(seconds=1))

    running = harness.deliver_message(first_message)
    assert running.begin() is not None
    assert harness.deliver_message(third_message).begin() is None
    assert harness.broker.take() == []  # acknowledged: nothing published again, it waits for its turn
    assert harness.run(third)["status"] == "queued"
    assert harness.deliver_message(second_message).begin() is None  # the head: it waits for the lease
    (poll,) = harness.broker.take()
    assert poll.message.args[0] == second and poll.delay is not None

    running.end()
    (handed_on,) = harness.broker.take()
    assert handed_on.message.args[0] == second and handed_on.message.options[HANDED_ON] is True
    running = harness.deliver_message(handed_on.message)
    assert running.begin() is not None
    running.end()
    (handed_on,) = harness.broker.take()
    assert handed_on.message.args[0] == third
    running = harness.deliver_message(handed_on.message)
    assert running.begin() is not None
    running.end()
    assert [harness.run(run_id)["status"] for run_id in (first, second, third)] == ["succeeded"] * 3
    assert harness.deliver_message(poll.message).begin() is None  # the head's poll: already done
    assert harness.job_doc("queue")["lease"] is None


def test_a_slot_published_behind_an_older_one_is_acknowledged_unread_and_runs_when_handed_on(
        harness: Harness) -> None:
    """The leader marks a slot it publishes behind an older one not started
    (`cronhive.broker.BEHIND_OPTION`): its delivery reads and writes nothing — also
    redelivered — and the hand-on of the run before it starts it."""
    harness.job("queue", **FIRE_ALL)
    now = harness.clock.now()
    first, first_message = waiting_slot(harness, "queue", now - timedelta(seconds=2), reserved=True)
    second, _ = waiting_slot(harness, "queue", now - timedelta(seconds=1))
    behind = run_message(harness.settings.runs_queue, second, "queue", behind=True)
    commands = CommandCounter()
    store = MongoStore.open(Settings.from_env({"MONGODB_URI": harness.store.uri,
                                               "MONGODB_DB": harness.store.db.name}), event_listeners=[commands])
    try:
        counted = RunLifecycle(store, harness.clock, harness.settings, harness.keeper, worker="testhost:4242")
        commands.take()
        assert harness.deliver_message(behind, lifecycle=counted).begin() is None
        assert harness.deliver_message(behind, lifecycle=counted, redelivered=True).begin() is None
        assert commands.take() == [] and harness.broker.take() == []  # nothing read, nothing published
    finally:
        store.close()
    running = harness.deliver_message(first_message)
    assert running.begin() is not None
    running.end()
    (handed_on,) = harness.broker.take()
    assert handed_on.message.args[0] == second and BEHIND_OPTION not in handed_on.message.options
    running = harness.deliver_message(handed_on.message)
    assert running.begin() is not None
    running.end()
    assert [harness.run(run_id)["status"] for run_id in (first, second)] == ["succeeded"] * 2


def reaper_for(harness: Harness, handed_on: list[tuple[str, str]]) -> Reaper:
    def republish(run: Run, after_attempt: int) -> None:
        raise AssertionError("no attempt died here")

    return Reaper(harness.store, harness.clock, harness.settings, republish, "host:1",
                  hand_on=lambda run_id, job_id: handed_on.append((run_id, job_id)))


def test_the_reaper_publishes_the_head_of_a_queue_nothing_moves_once_a_lease(harness: Harness) -> None:
    for job_id in ("stalled", "moving"):
        harness.job(job_id, **FIRE_ALL)
    harness.job("allowed", misfire_policy="fire_all", overlap_policy="allow")
    now = harness.clock.now()
    old = now - timedelta(seconds=2 * LEASE_S)
    head, _ = waiting_slot(harness, "stalled", old)  # its message was acknowledged, its hand-on lost
    waiting_slot(harness, "stalled", old + timedelta(seconds=1))
    # a queue whose lease a run holds: that run hands it on when it ends
    assert harness.store.claim_lease(LeaseScope.JOB, "moving", "host:9:attempt", LEASE_S, now) is not None
    waiting_slot(harness, "moving", old)
    waiting_slot(harness, "allowed", old)  # not a queue: its slots do not wait for each other
    waiting_slot(harness, "stalled", now)  # not the head
    handed_on: list[tuple[str, str]] = []
    reaper = reaper_for(harness, handed_on)

    report = reaper.run_once(now)
    assert report is not None and report.restarted == [head] and handed_on == [(head, "stalled")]
    assert reaper.restart_stalled_queues(now) == []  # published: not again for a lease

    attempt = harness.deliver_message(run_message(harness.settings.runs_queue, head, "stalled")).begin()
    assert attempt is not None and attempt.run_id == head


def test_the_reaper_publishes_every_slot_of_a_job_whose_slots_no_longer_queue_once_it_changed(
        harness: Harness) -> None:
    harness.job("changed", **FIRE_ALL)
    now = harness.clock.now()
    old = now - timedelta(seconds=2 * LEASE_S)
    # acknowledged while they queued; then the job stops queueing its slots: no run hands on to them
    waiting = [waiting_slot(harness, "changed", old + timedelta(seconds=second))[0] for second in range(3)]
    handed_on: list[tuple[str, str]] = []
    reaper = reaper_for(harness, handed_on)
    harness.clock.advance(1)
    harness.store.update_job("changed", {"overlap_policy": "allow"}, harness.clock.now())

    report = reaper.run_once(harness.clock.now())
    assert report is not None and sorted(report.restarted) == sorted(waiting)
    for run_id in waiting:
        assert harness.deliver_message(run_message(harness.settings.runs_queue, run_id, "changed")).begin()
