"""The dispatcher and maintenance windows, on the real store and RabbitMQ with a
hand-moved clock: one read of the windows per pass whatever the number of jobs,
slots inside a window recorded skipped (maintenance) and never published, the
jobs firing again by themselves once it ends, with no replay of its slots; and
the fire_once catch-up run recording the slots it coalesced."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cronhive.domain import utcnow
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.store import MongoStore
from cronhive.windows import MaintenanceWindow
from tests.scheduler.conftest import FakeClock, create_job

Messages = Callable[[], list[dict[str, Any]]]


class CountingWindows:
    """Counts the store's ``windows_between`` calls (the dispatcher's one window read)."""

    def __init__(self, store: MongoStore) -> None:
        self.calls = 0
        self.real = store.windows_between
        store.windows_between = self  # type: ignore[method-assign]

    def __call__(self, *args: Any) -> list[MaintenanceWindow]:
        self.calls += 1
        return self.real(*args)


def test_slots_inside_a_window_are_skipped_once_read_per_pass_and_fire_again_after(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, messages: Messages) -> None:
    at = utcnow()
    named = [create_job(store, f"named_{i}", at=at, misfire_policy="fire_all", overlap_policy="allow", tags=["db"])
             for i in range(30)]
    create_job(store, "free", at=at, misfire_policy="fire_all", overlap_policy="allow", tags=["web"])
    first = named[0]["next_fire_at"]
    store.create_window(MaintenanceWindow("mnt_t", first + timedelta(seconds=2), first + timedelta(seconds=5),
                                          tags=("db",)))
    counting = CountingWindows(store)
    dispatcher = make_dispatcher(term=3, batch=1000)
    clock.set(first + timedelta(seconds=6, milliseconds=500))  # 7 slots due: 2 before, 3 inside, 2 after
    result = dispatcher.run_pass()
    assert counting.calls == 1  # one read for the 31 jobs of the pass
    assert result.skipped == 30 * 3 and result.fired == 30 * 4 + 7
    for job in named[:3]:
        runs = {run["scheduled_for"]: run for run in store.runs.find({"job_id": job["_id"]})}
        assert sorted(runs) == [first + timedelta(seconds=s) for s in range(7)]
        for offset, run in enumerate(runs[at] for at in sorted(runs)):
            if 2 <= offset < 5:
                assert (run["status"], run["error"]["type"]) == ("skipped", "maintenance")
            else:
                assert run["status"] == "queued"
    published = {message["args"][0] for message in messages()}
    assert not published & {run["_id"] for run in store.runs.find({"status": "skipped"})}
    clock.advance(1)
    assert dispatcher.run_pass().fired == 31  # after the window: every job fires by itself
    assert counting.calls == 2


def test_fire_once_catch_up_records_the_slots_it_coalesced(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock) -> None:
    job = create_job(store, "once", overlap_policy="allow")
    first = job["next_fire_at"]
    clock.set(first + timedelta(seconds=9, milliseconds=200))  # the leader was away 10 slots
    assert make_dispatcher().run_pass().fired == 1
    (run,) = store.runs.find({"job_id": "once"})
    assert run["scheduled_for"] == first + timedelta(seconds=9)
    assert (run["covers_from"], run["covers_until"]) == (first, first + timedelta(seconds=9))
