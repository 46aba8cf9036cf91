"""``max_fires`` against a real scheduler process and a real worker process: a
``*/2 * * * * *`` job with ``max_fires: 3`` fires exactly three slots (each one run,
succeeded), then shows ``completed`` with ``next_trigger_at`` null; a manual trigger
still runs it; a PUT raising ``max_fires`` makes it active until the new bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests.scheduler.cluster import scheduler_and_workers
from tests.worker.cluster import wait_for

API = "/api/v1/cron"

pytestmark = pytest.mark.slow


@pytest.fixture
def system(settings: Settings, store: MongoStore, tmp_path: Path) -> Iterator[FlaskClient]:
    app = create_app(settings)
    app.testing = True
    try:
        with scheduler_and_workers(settings, store, tmp_path):
            yield app.test_client()
    finally:
        close_app(app)


def scheduled_runs(store: MongoStore, job_id: str) -> list[dict[str, Any]]:
    return list(store.runs.find({"job_id": job_id, "trigger": "schedule"}).sort("scheduled_for", 1))


def wait_completed(client: FlaskClient, job_id: str, timeout_s: float) -> dict[str, Any]:
    return wait_for(lambda: (job := client.get(f"{API}/jobs/{job_id}").get_json())["status"] == "completed" and job,
                    timeout_s, f"job {job_id} to complete")


def test_max_fires_with_a_two_second_schedule(system: FlaskClient, store: MongoStore) -> None:
    client = system
    created = client.post(f"{API}/jobs", json={"job_id": "thrice", "name": "thrice", "schedule": "*/2 * * * * *",
                                               "handler": "noop", "max_fires": 3})
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["fires_left"] == 3 and created.get_json()["status"] == "active"

    job = wait_completed(client, "thrice", 20)
    assert job["next_trigger_at"] is None and job["fires_left"] == 0 and job["max_fires"] == 3
    time.sleep(4.5)  # two more slots' worth: nothing fires
    runs = scheduled_runs(store, "thrice")
    assert len(runs) == 3, runs
    assert [b["scheduled_for"] - a["scheduled_for"] for a, b in pairwise(runs)] == [timedelta(seconds=2)] * 2
    wait_for(lambda: all(run["status"] == "succeeded" for run in scheduled_runs(store, "thrice")), 15,
             "the three runs to succeed")
    assert store.jobs.find_one({"_id": "thrice"})["fires"] == 3

    manual = client.post(f"{API}/jobs/thrice/trigger")  # manual triggers still work
    assert manual.status_code == 202
    run_id = manual.get_json()["run_id"]
    wait_for(lambda: client.get(f"{API}/runs/{run_id}").get_json()["status"] == "succeeded", 15, "the manual run")
    assert client.get(f"{API}/jobs/thrice").get_json()["status"] == "completed"

    extended = client.put(f"{API}/jobs/thrice", json={"max_fires": 5}).get_json()
    assert extended["status"] == "active" and extended["fires_left"] == 2 and extended["next_trigger_at"]
    job = wait_completed(client, "thrice", 20)
    assert job["fires_left"] == 0
    time.sleep(2.5)
    assert len(scheduled_runs(store, "thrice")) == 5
