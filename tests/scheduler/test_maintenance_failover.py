"""A maintenance window that opens and closes while the leader scheduler is SIGKILLed
inside it (real scheduler processes, tests/scheduler/cluster.py): every slot of its
jobs inside the window is recorded ``skipped`` (type ``maintenance``) — also the
slots the new leader catches up after the takeover, under ``fire_all`` and
``fire_once`` alike — none of them is published, and after the window they fire
again by themselves, every slot; jobs it does not name are untouched."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cronhive import ledger
from cronhive.domain import utcnow
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.windows import MaintenanceWindow, new_maintenance_id
from tests.scheduler.cluster import Cluster, create_jobs, drain, second, slot_gaps, wait_until_caught_up

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(settings: Settings, store: MongoStore, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(settings, store, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def sleep_until(at: datetime) -> None:
    time.sleep(max(0.0, (at - utcnow()).total_seconds()))


def test_a_window_opens_and_closes_while_the_leader_is_sigkilled_inside_it(
        cluster: Cluster, store: MongoStore, settings: Settings) -> None:
    every = create_jobs(store, 4, "mall", tags=["maint"], misfire_policy="fire_all", overlap_policy="allow")
    once = create_jobs(store, 4, "monce", tags=["maint"], overlap_policy="allow")
    free = create_jobs(store, 2, "free", tags=["other"], misfire_policy="fire_all", overlap_policy="allow")
    named = every + once
    first = max(job["next_fire_at"] for job in store.jobs.find({}, {"next_fire_at": 1}))
    cluster.start(2)
    leader, _ = cluster.wait_for_leader()
    now = utcnow()
    start = second(now) + timedelta(seconds=3)
    end = start + timedelta(seconds=9)
    store.create_window(MaintenanceWindow(new_maintenance_id(now), start, end, tags=("maint",), created_at=now))

    sleep_until(start + timedelta(seconds=1.5))
    victim = cluster.by_pid(leader).process
    victim.send_signal(signal.SIGKILL)
    killed_at = utcnow()
    victim.wait()
    cluster.wait_for_leader(other_than=leader)
    taken_at = utcnow()
    assert taken_at < end, "the takeover came after the window: the test proves nothing"
    sleep_until(end + timedelta(seconds=4))
    last = second(utcnow()) - timedelta(seconds=1)
    wait_until_caught_up(store, named + free, last)
    cluster.stop()

    print(f"\nleader SIGKILLed {(killed_at - start).total_seconds():.1f} s into the window, new leader "
          f"{(taken_at - killed_at).total_seconds():.1f} s later; window {start:%H:%M:%S}–{end:%H:%M:%S}")
    inside = list(store.runs.find({"job_id": {"$in": named}, "scheduled_for": {"$gte": start, "$lt": end}}))
    assert len(inside) == len(named) * 9  # every slot inside the window has its run ...
    assert {(run["status"], run["error"]["type"]) for run in inside} == {("skipped", "maintenance")}  # ... skipped
    gap_terms = {run["sched_term"] for run in inside}
    assert len(gap_terms) == 2  # written by both leaders: the new one caught the takeover's slots up as skipped
    # before and after the window: every fire_all slot ran; under fire_once a leader that fell a slot
    # behind (the takeover, a busy machine) coalesces, as the ledger says — none is missed
    assert slot_gaps(store, every, first, start - timedelta(seconds=1)) == {}
    assert slot_gaps(store, every, end, last) == {}
    assert slot_gaps(store, free, first, last) == {}
    for job_id in once:
        job = store.get_job(job_id)
        spans = ledger.spans_of(job, store.ledger_history(job))
        book = ledger.ledger(job_id, job.tags, spans, store.ledger_runs(job_id, first, last, 10_000),
                             store.windows_between(first, last), first, last, utcnow())
        outcomes = {slot.outcome for slot in book if not start <= slot.scheduled_for < end}
        assert outcomes <= {"queued", "coalesced"}, [slot for slot in book if slot.outcome not in ("queued", "coalesced")]
        assert {slot.outcome for slot in book if start <= slot.scheduled_for < end} == {"skipped"}
        assert len(book) == int((last - first).total_seconds()) + 1
    outside = store.runs.count_documents({"job_id": {"$in": named}, "status": "skipped",
                                          "$or": [{"scheduled_for": {"$lt": start}}, {"scheduled_for": {"$gte": end}}]})
    assert outside == 0
    assert store.runs.count_documents({"job_id": {"$in": free}, "status": "skipped"}) == 0
    published = drain(settings.rabbitmq_url, settings.runs_queue)
    skipped_ids = {run["_id"] for run in inside}
    assert not skipped_ids & set(published)  # none of the window's slots was published
