"""GET /jobs/:id/runs (run history, newest first, paginated like the job list) and
GET /runs/:run_id, with unknown ids and bad queries in the one error shape."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient

from cronhive.dispatch import new_run
from cronhive.enums import RunStatus, Trigger
from cronhive.store import MongoStore
from cronhive.store.documents import run_to_doc
from tests.api.conftest import CANONICAL, SEED_NOW, FakeClock, assert_error, create

RUN_FIELDS = {"run_id", "job_id", "trigger", "scheduled_for", "status", "attempt", "worker", "created_at",
              "queued_at", "started_at", "finished_at", "duration_ms", "lateness_ms", "error", "retry_at", "attempts",
              "output", "output_truncated", "log", "notifications", "cancel_requested"}


def add_runs(store: MongoStore, job_id: str, count: int, **fields: Any) -> list[str]:
    """``count`` runs created one second apart (oldest first)."""
    job = store.get_job(job_id)
    ids = []
    for index in range(count):
        at = SEED_NOW + timedelta(seconds=index)
        run = new_run(job, f"run_20260326_1000{index:02d}_{job_id}", Trigger.SCHEDULE, at, at, None,
                      status=RunStatus.QUEUED)
        doc = {**run_to_doc(run), **fields}  # a stored document, some fields as a worker would have set them
        store.runs.insert_one(doc)
        ids.append(doc["_id"])
    return ids


def test_run_history_is_newest_first_and_paginated(client: FlaskClient, store: MongoStore, clock: FakeClock,
                                                   base: str) -> None:
    create(client, job_id="report")
    create(client, job_id="other")
    ids = add_runs(store, "report", 5)
    add_runs(store, "other", 2)

    first = client.get(f"{base}/jobs/report/runs?page=1&limit=2")
    assert first.status_code == 200
    body = first.get_json()
    assert [run["run_id"] for run in body["data"]] == [ids[4], ids[3]]
    assert body["pagination"] == {"page": 1, "limit": 2, "total": 5}
    assert [run["run_id"] for run in client.get(f"{base}/jobs/report/runs?page=3&limit=2").get_json()["data"]] == [ids[0]]
    beyond = client.get(f"{base}/jobs/report/runs?page=4&limit=2").get_json()
    assert beyond == {"data": [], "pagination": {"page": 4, "limit": 2, "total": 5}}

    everything = client.get(f"{base}/jobs/report/runs").get_json()
    assert everything["pagination"] == {"page": 1, "limit": 20, "total": 5}
    assert [run["run_id"] for run in everything["data"]] == list(reversed(ids))
    assert all(run["job_id"] == "report" for run in everything["data"])


def test_runs_with_the_same_creation_instant_keep_a_stable_order(client: FlaskClient, store: MongoStore,
                                                                 clock: FakeClock) -> None:
    create(client, job_id="report")
    job = store.get_job("report")
    for suffix in ("b", "a", "c"):
        store.insert_run(new_run(job, f"run_20260326_100000_{suffix}", Trigger.MANUAL, SEED_NOW, SEED_NOW, None))
    pages = [client.get(f"{CANONICAL}/jobs/report/runs?page={page}&limit=1").get_json()["data"][0]["run_id"]
             for page in (1, 2, 3)]
    assert pages == ["run_20260326_100000_c", "run_20260326_100000_b", "run_20260326_100000_a"]


def test_a_run_shows_every_field_with_instants_in_whole_seconds(client: FlaskClient, store: MongoStore,
                                                                clock: FakeClock, base: str) -> None:
    create(client, job_id="report")
    (finished,) = add_runs(store, "report", 1, status="failed", attempt=2, worker="host-a:4242",
                           queued_at=SEED_NOW, started_at=SEED_NOW + timedelta(milliseconds=1250),
                           finished_at=SEED_NOW + timedelta(seconds=3, milliseconds=500), duration_ms=2250,
                           lateness_ms=1250, error={"type": "HandlerFailed", "message": "disk full"})
    response = client.get(f"{base}/runs/{finished}")
    assert response.status_code == 200
    run = response.get_json()
    assert set(run) == RUN_FIELDS
    assert run == {
        "run_id": finished, "job_id": "report", "trigger": "schedule", "scheduled_for": "2026-03-26T10:00:00Z",
        "status": "failed", "attempt": 2, "worker": "host-a:4242", "created_at": "2026-03-26T10:00:00Z",
        "queued_at": "2026-03-26T10:00:00Z", "started_at": "2026-03-26T10:00:01Z",
        "finished_at": "2026-03-26T10:00:03Z", "duration_ms": 2250, "lateness_ms": 1250,
        "error": {"type": "HandlerFailed", "message": "disk full", "traceback": None}, "retry_at": None,
        "attempts": [], "output": None, "output_truncated": False, "log": None, "notifications": [],
        "cancel_requested": False,
    }
    # a run list shows every field but the log (GET /runs/:run_id does)
    assert client.get(f"{base}/jobs/report/runs").get_json()["data"] == [
        {key: value for key, value in run.items() if key != "log"}]


def test_a_run_shows_each_attempt_with_its_worker_times_and_outcome(client: FlaskClient, store: MongoStore,
                                                                     clock: FakeClock, base: str) -> None:
    create(client, job_id="report")
    first_start = SEED_NOW + timedelta(milliseconds=1250)
    attempts = [
        {"attempt": 1, "worker": "host-a:1", "status": "failed", "started_at": first_start,
         "finished_at": first_start + timedelta(milliseconds=900), "duration_ms": 900,
         "error": {"type": "RuntimeError", "message": "boom"}},
        {"attempt": 2, "worker": "host-b:2", "status": "succeeded", "started_at": SEED_NOW + timedelta(seconds=20),
         "finished_at": SEED_NOW + timedelta(seconds=21, milliseconds=700), "duration_ms": 1700, "error": None},
    ]
    (run_id,) = add_runs(store, "report", 1, status="succeeded", attempt=2, attempts=attempts)
    shown = client.get(f"{base}/runs/{run_id}").get_json()["attempts"]
    assert shown == [
        {"attempt": 1, "worker": "host-a:1", "status": "failed", "started_at": "2026-03-26T10:00:01Z",
         "finished_at": "2026-03-26T10:00:02Z", "duration_ms": 900, "error": {"type": "RuntimeError", "message": "boom", "traceback": None}},
        {"attempt": 2, "worker": "host-b:2", "status": "succeeded", "started_at": "2026-03-26T10:00:20Z",
         "finished_at": "2026-03-26T10:00:21Z", "duration_ms": 1700, "error": None},
    ]
    assert client.get(f"{base}/jobs/report/runs").get_json()["data"][0]["attempts"] == shown


def test_a_triggered_run_appears_in_the_history_with_nulls_not_missing(client: FlaskClient, clock: FakeClock,
                                                                       base: str) -> None:
    create(client, job_id="report")
    run_id = client.post(f"{base}/jobs/report/trigger").get_json()["run_id"]
    (run,) = client.get(f"{base}/jobs/report/runs").get_json()["data"]
    assert run["run_id"] == run_id and run["status"] == "queued" and run["trigger"] == "manual"
    assert set(run) == RUN_FIELDS - {"log"}  # a list leaves the log out
    assert run["started_at"] is None and run["worker"] is None and run["error"] is None
    assert client.get(f"{base}/runs/{run_id}").get_json() == {**run, "log": None}


def test_unknown_ids_are_404_in_the_one_error_shape(client: FlaskClient, clock: FakeClock, base: str) -> None:
    assert_error(client.get(f"{base}/jobs/nope/runs"), 404, "job_not_found")
    assert_error(client.get(f"{base}/runs/run_20260326_100000_nope"), 404, "run_not_found")
    assert_error(client.get(f"{base}/runs/%24where"), 404, "run_not_found")


def test_bad_pagination_is_400(client: FlaskClient, clock: FakeClock, base: str) -> None:
    create(client, job_id="report")
    for query in ("page=0", "page=-1", "page=abc", "limit=0", "limit=101", "limit=x", "page=1.5", "page="):
        body = assert_error(client.get(f"{base}/jobs/report/runs?{query}"), 400, "invalid_query")
        assert body["error"]["details"], query
