"""A slot the scheduler records ``skipped`` announces it (issue 12, item 4): the
notification is written with the skipped run (the run is the outbox), and a worker's
`Deliverer` POSTs it to a local server on 127.0.0.1 — but never for a dead leader's
draft that was not committed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from cronhive.domain import Notify
from cronhive.enums import NotifyEvent
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.worker.notify import Deliverer
from tests import hooks
from tests.scheduler.conftest import FakeClock, create_job


@pytest.fixture
def hook() -> Iterator[hooks.Hook]:
    with hooks.serve() as server:
        yield server


def hold_lease(store: MongoStore, job_id: str, until_s: float, clock: FakeClock) -> None:
    store.jobs.update_one({"_id": job_id}, {"$set": {"lease": {
        "holder": "worker:9", "run_id": "run_other", "token": 3,
        "expires_at": clock.now() + timedelta(seconds=until_s)}, "lease_term": 3}})


def test_a_skipped_slot_is_announced_once_committed(store: MongoStore, settings: Settings, clock: FakeClock,
                                                     make_dispatcher: Callable[..., Dispatcher],
                                                     hook: hooks.Hook) -> None:
    job = create_job(store, "busy", name="Busy job",
                     notify=Notify(url=hook.url(), on=(NotifyEvent.SKIPPED,)))
    slot = job["next_fire_at"]
    clock.set(slot + timedelta(milliseconds=5))
    hold_lease(store, "busy", 60, clock)
    assert make_dispatcher().run_pass().skipped == 1
    (run,) = store.runs.find({"job_id": "busy"})
    assert run["status"] == "skipped" and run["notify_due"] == clock.now()
    assert [(n["event"], n["status"]) for n in run["notifications"]] == [("skipped", "pending")]

    sender = Deliverer(store, clock, settings.replace(http_handler_allowed_hosts="127.0.0.1"))
    assert sender.run_once() == 1
    (request,) = hook.received()
    body = request.json()
    assert (body["event"], body["job_id"], body["job_name"], body["run_id"], body["status"]) == (
        "skipped", "busy", "Busy job", run["_id"], "skipped")
    assert body["scheduled_for"] == slot.strftime("%Y-%m-%dT%H:%M:%SZ") and body["error"]["type"] == "overlap"
    assert store.get_run(run["_id"]).notifications[0].status == "delivered"


def test_a_draft_the_job_has_not_moved_past_is_not_announced(store: MongoStore, settings: Settings,
                                                              clock: FakeClock,
                                                              make_dispatcher: Callable[..., Dispatcher],
                                                              hook: hooks.Hook) -> None:
    job = create_job(store, "draft", notify=Notify(url=hook.url(), on=(NotifyEvent.SKIPPED,)))
    clock.set(job["next_fire_at"] + timedelta(milliseconds=5))
    hold_lease(store, "draft", 60, clock)
    make_dispatcher().run_pass()
    (run,) = store.runs.find({"job_id": "draft"})
    # as if a leader died between inserting the slot's run and committing the job's advance
    store.jobs.update_one({"_id": "draft"}, {"$set": {"next_fire_at": run["scheduled_for"]}})
    sender = Deliverer(store, clock, settings.replace(http_handler_allowed_hosts="127.0.0.1"))
    assert sender.run_once() == 0 and hook.received() == []
    store.jobs.update_one({"_id": "draft"}, {"$set": {"next_fire_at": run["scheduled_for"] + timedelta(seconds=1)}})
    assert sender.run_once() == 1 and len(hook.received()) == 1


def test_a_job_without_notify_writes_no_outbox(store: MongoStore, clock: FakeClock,
                                               make_dispatcher: Callable[..., Dispatcher]) -> None:
    job = create_job(store, "quiet")
    clock.set(job["next_fire_at"] + timedelta(milliseconds=5))
    hold_lease(store, "quiet", 60, clock)
    make_dispatcher().run_pass()
    (run,) = store.runs.find({"job_id": "quiet"})
    assert run["status"] == "skipped" and "notifications" not in run and "notify_due" not in run
