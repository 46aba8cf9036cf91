"""scheduler/loop.py with a hand-moved clock on the real store and RabbitMQ: how long the
loop sleeps (next due instant, renewal, cap), role changes, and resigning."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cronhive.broker import RunPublisher
from cronhive.domain import utcnow
from cronhive.scheduler.dispatcher import QUEUED_MARK_DELAY_S
from cronhive.scheduler.loop import SchedulerLoop
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests.scheduler.conftest import FakeClock, create_job


@pytest.fixture
def loop_settings(settings: Settings) -> Settings:
    return settings.replace(leader_lease_s=9, scheduler_max_sleep_ms=500)


def make_loop(loop_settings: Settings, store: MongoStore, publisher: RunPublisher, clock: FakeClock,
              holder: str = "host:1") -> SchedulerLoop:
    return SchedulerLoop(loop_settings, store, publisher, clock, holder)


def test_the_leader_sleeps_until_the_next_due_instant(loop_settings: Settings, store: MongoStore,
                                                      publisher: RunPublisher) -> None:
    job = create_job(store, "soon", schedule="*/5 * * * * *", overlap_policy="allow")
    clock = FakeClock(job["next_fire_at"] - timedelta(milliseconds=200))
    loop = make_loop(loop_settings, store, publisher, clock)
    assert loop.step() == pytest.approx(0.2)  # not the 0.5 s cap, not a fixed poll
    assert loop.leadership.is_leader(clock.now())
    clock.set(job["next_fire_at"])
    assert loop.step() == pytest.approx(0.5)  # fired; next slot in 5 s: the cap wins
    assert store.runs.count_documents({"job_id": "soon", "status": "pending"}) == 1  # confirmed, mark delayed
    clock.advance(QUEUED_MARK_DELAY_S)
    loop.step()
    assert store.runs.count_documents({"job_id": "soon", "status": "queued"}) == 1


def test_without_jobs_the_leader_wakes_for_the_cap_and_its_renewal(loop_settings: Settings, store: MongoStore,
                                                                   publisher: RunPublisher) -> None:
    clock = FakeClock(utcnow())
    loop = make_loop(loop_settings.replace(scheduler_max_sleep_ms=10_000), store, publisher, clock)
    assert loop.step() == pytest.approx(3.0)  # the renewal (a third of 9 s)


def test_a_standby_sleeps_until_its_next_claim_attempt_and_takes_over(loop_settings: Settings, store: MongoStore,
                                                                      publisher: RunPublisher) -> None:
    clock = FakeClock(utcnow())
    leader = make_loop(loop_settings, store, publisher, clock, "host:1")
    standby = make_loop(loop_settings, store, publisher, clock, "host:2")
    leader.step()
    assert standby.step() == pytest.approx(0.5)  # the cap; its claim attempt is due in 3 s
    assert not standby.leadership.is_leader(clock.now())
    clock.advance(9.005)  # the leader died: its lease expired
    standby.step()
    assert standby.leadership.is_leader(clock.now()) and standby.leadership.term == 2
    assert store.scheduler_status(clock.now()).view()["holder"] == "host:2"


def test_stop_resigns_the_lease_and_removes_the_heartbeat(loop_settings: Settings, store: MongoStore,
                                                          publisher: RunPublisher) -> None:
    clock = FakeClock(utcnow())
    loop = make_loop(loop_settings, store, publisher, clock)
    loop.step()
    assert store.scheduler_status(clock.now()).view()["holder"] == "host:1"
    loop.stop()
    loop.run()  # returns at once: the stop was asked before
    status = store.scheduler_status(clock.now()).view()
    assert status["holder"] is None and status["standbys"] == []
    assert store.db["schedulers"].count_documents({}) == 0


def test_a_job_that_keeps_changing_is_retried_without_spinning(loop_settings: Settings, store: MongoStore,
                                                               publisher: RunPublisher,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    job = create_job(store, "restless", overlap_policy="allow")
    clock = FakeClock(job["next_fire_at"] + timedelta(milliseconds=5))
    loop = make_loop(loop_settings, store, publisher, clock)
    real_due_jobs = store.due_jobs

    def always_changed(now, limit):  # type: ignore[no-untyped-def]
        docs = real_due_jobs(now, limit)
        store.jobs.update_one({"_id": "restless"}, {"$inc": {"revision": 1}})
        return docs

    monkeypatch.setattr(store, "due_jobs", always_changed)
    assert loop.step() >= 0.02
    assert store.runs.count_documents({}) == 0


def test_the_leader_runs_the_slot_audit_in_its_own_thread_and_a_standby_never(
        loop_settings: Settings, store: MongoStore, publisher: RunPublisher) -> None:
    clock = FakeClock(utcnow())
    leader = make_loop(loop_settings, store, publisher, clock, "host:1")
    standby = make_loop(loop_settings, store, publisher, clock, "host:2")
    leader.step()
    standby.step()
    assert standby._audit_thread is None
    thread = leader._audit_thread
    assert thread is not None and thread.name == "slot-audit"
    thread.join(10)
    assert store.audit_watermark() == clock.now()  # the first audit sets the watermark
    leader.step()
    assert leader._audit_thread is thread  # not due again for 30 s: no second audit


def test_a_crowd_beyond_the_horizon_still_wakes_the_leader_to_plan_it_early(loop_settings: Settings,
                                                                           store: MongoStore,
                                                                           publisher: RunPublisher) -> None:
    """The earliest due instant is first looked for by the horizon after the longest sleep
    (a bounded read), then by the furthest a crowd's horizon stretches: ten jobs due in
    15 s at a measured 1 s each to plan are a crowd whose planning must start now."""
    slot = (utcnow() + timedelta(seconds=40)).replace(microsecond=0)
    for index in range(10):
        create_job(store, f"crowd_{index}", schedule=f"{slot.second} {slot.minute} {slot.hour} * * *")
    clock = FakeClock(slot - timedelta(seconds=15))
    loop = make_loop(loop_settings.replace(scheduler_lookahead_ms=1000), store, publisher, clock)
    loop.dispatcher.plan_cost_s = 1.0
    assert loop.step() == pytest.approx(0.25)  # inside the stretched horizon: it polls to plan them
    assert loop.dispatcher.horizon == timedelta(seconds=21)  # 1 s lookahead + 10 jobs × 1 s × 2


def test_a_job_due_beyond_the_furthest_horizon_leaves_the_wake_at_the_longest_sleep(
        loop_settings: Settings, store: MongoStore, publisher: RunPublisher) -> None:
    job = create_job(store, "later", schedule="0 0 1 1 *")
    clock = FakeClock(job["next_fire_at"] - timedelta(minutes=5))
    loop = make_loop(loop_settings, store, publisher, clock)
    assert loop.store.earliest_due_by(clock.now() + timedelta(seconds=61)) is None  # not read as due soon
    assert loop.step() == pytest.approx(0.5)  # the cap
    assert loop.store.earliest_due_by(job["next_fire_at"]) == job["due_at"]
