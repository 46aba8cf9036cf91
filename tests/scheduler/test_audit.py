"""The leader's slot audit (scheduler/audit.py) on the real store, with a hand-moved
clock and the real dispatcher: slots that lost their run are counted in
``cronhive_slots_missed_total``, each once (across audits and across leaders),
while coalesced, skipped, maintenance and not-yet-settled slots are not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from prometheus_client import REGISTRY

from cronhive.domain import utcnow
from cronhive.scheduler.audit import SlotAuditor
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.scheduler.metrics import SchedulerMetrics
from cronhive.slots import slot_run_id
from cronhive.store import MongoStore
from cronhive.windows import MaintenanceWindow
from tests.scheduler.conftest import FakeClock, create_job


def missed_total() -> float:
    return REGISTRY.get_sample_value("cronhive_slots_missed_total") or 0.0


def test_lost_slots_are_counted_once_and_nothing_else_is(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock) -> None:
    at = utcnow()
    policies = {"all": "fire_all", "once": "fire_once", "skip": "skip"}
    for name, policy in policies.items():
        create_job(store, name, at=at, misfire_policy=policy, misfire_grace_s=0, overlap_policy="allow",
                   tags=["maint"] if name == "skip" else [])
    first = store.jobs.find_one({"_id": "all"})["next_fire_at"]
    store.create_window(MaintenanceWindow("mnt_a", first + timedelta(seconds=10), first + timedelta(seconds=13),
                                          tags=("maint",)))
    metrics = SchedulerMetrics()
    clock.set(first - timedelta(seconds=1))
    auditor = SlotAuditor(store, clock, lambda: 1, metrics)
    assert auditor.audit() is None  # the first audit only sets the watermark
    dispatcher = make_dispatcher()
    for second in [*range(5), *range(9, 17)]:  # the scheduler was away from 5 to 8
        clock.set(first + timedelta(seconds=second, milliseconds=200))
        dispatcher.run_pass()
    once_runs = {run["scheduled_for"]: run for run in store.runs.find({"job_id": "once"})}
    assert once_runs[first + timedelta(seconds=9)]["covers_from"] == first + timedelta(seconds=5)  # coalesced
    lost = [slot_run_id("all", first + timedelta(seconds=s)) for s in (2, 3)]
    assert store.runs.delete_many({"_id": {"$in": lost}}).deleted_count == 2  # as if a leader lost them

    before = missed_total()
    clock.set(first + timedelta(seconds=19))  # judges the slots up to 14 (grace 0, settle 5 s)
    assert auditor.audit() == 2
    assert missed_total() == before + 2
    clock.advance(1)
    assert auditor.audit() == 0  # counted once
    successor = SlotAuditor(store, clock, lambda: 2, metrics)  # another leader: the watermark is in MongoDB
    clock.advance(1)
    assert successor.audit() == 0
    assert missed_total() == before + 2
    # a slot not yet dispatched is not judged before its grace and settling time ...
    clock.set(first + timedelta(seconds=17 + 4, milliseconds=900))
    assert successor.audit() == 0
    # ... and once it is, it counts (the scheduler stayed away since 16)
    clock.set(first + timedelta(seconds=17 + 5, milliseconds=500))
    assert successor.audit() == 3  # slot 17 of each of the three jobs
    assert missed_total() == before + 5


def test_a_stale_leaders_audit_is_dropped(store: MongoStore, clock: FakeClock) -> None:
    metrics = SchedulerMetrics()
    old, new = SlotAuditor(store, clock, lambda: 1, metrics), SlotAuditor(store, clock, lambda: 2, metrics)
    assert new.audit() is None
    clock.advance(1)
    assert new.audit() == 0
    clock.advance(1)
    assert old.audit() is None  # the term-2 leader wrote the watermark: term 1 may not move it
