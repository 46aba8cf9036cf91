"""A real scheduler process (default lookahead) and a real worker process: slot runs
planned ahead are published at their instant, never started before their slot, and
run with the job's args as carried by the message's snapshot; a PUT inside the
lookahead is what the next slot runs with."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cronhive.domain import utcnow
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests.scheduler.cluster import scheduler_and_workers
from tests.worker.cluster import wait_for
from tests.worker.handlers_for_tests import read_events

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(settings: Settings, store: MongoStore, tmp_path: Path) -> Iterator[None]:
    with scheduler_and_workers(settings, store, tmp_path, HANDLER_MODULES="tests.worker.handlers_for_tests"):
        yield


def slot_runs(store: MongoStore, job_id: str) -> list[dict[str, Any]]:
    return list(store.runs.find({"job_id": job_id, "trigger": "schedule"}).sort("scheduled_for", 1))


def test_slots_planned_ahead_start_on_their_slot_with_the_job_as_it_is(cluster: None, store: MongoStore,
                                                                       tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    store.create_job({"job_id": "ticks", "name": "ticks", "schedule": "*/2 * * * * *", "handler": "record",
                      "args": {"file": str(first)}}, utcnow())
    wait_for(lambda: len(read_events(str(first))) >= 4, 20, "two runs with the first args")
    store.update_job("ticks", {"args": {"file": str(second)}}, utcnow())
    changed_at = utcnow()
    wait_for(lambda: len(read_events(str(second))) >= 4, 20, "two runs with the changed args")

    def succeeded() -> list[dict[str, Any]]:
        return [run for run in slot_runs(store, "ticks") if run["status"] == "succeeded"]

    # the handler's last event comes before its outcome is recorded: wait for the outcomes too
    wait_for(lambda: len(succeeded()) >= 4, 10, "four runs recorded succeeded")
    runs = succeeded()
    for run in runs:
        assert run["started_at"] >= run["scheduled_for"] - timedelta(milliseconds=250), run  # never early
        assert run["attempt"] == 1 and run["lease_token"] is not None
    # every slot after the change ran with the new args, none with the old
    old = {event["run_id"] for event in read_events(str(first))}
    late = [run["_id"] for run in runs if run["scheduled_for"] > changed_at + timedelta(seconds=1)]
    assert late and not old & set(late)
    assert len({run["scheduled_for"] for run in slot_runs(store, "ticks")}) == len(slot_runs(store, "ticks"))
