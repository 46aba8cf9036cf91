"""``GET /runs`` (runs across jobs: filters, newest first, paginated, indexed) and
``POST /runs/:run_id/cancel`` for runs that have not started, that run, and that ended
(the worker side is in tests/worker)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.domain import new_run
from cronhive.enums import FINAL_RUN_STATUSES, RunStatus, Trigger
from cronhive.leases import reservation_holder
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, SEED_NOW, FakeClock, assert_error, create


def add_run(store: MongoStore, job_id: str, run_id: str, *, status: RunStatus = RunStatus.QUEUED,
            trigger: Trigger = Trigger.SCHEDULE, at: datetime = SEED_NOW, **fields: Any) -> str:
    run = new_run(store.get_job(job_id), run_id, trigger, at, at, None, status)
    store.insert_run(replace(run, **fields))
    return run_id


@pytest.fixture
def history(client: FlaskClient, store: MongoStore) -> dict[str, str]:
    """Eight runs of two jobs, one minute apart (``r0`` oldest)."""
    create(client, job_id="export")
    create(client, job_id="report")
    plan = [("export", RunStatus.SUCCEEDED, Trigger.SCHEDULE), ("report", RunStatus.FAILED, Trigger.SCHEDULE),
            ("export", RunStatus.FAILED, Trigger.BACKFILL), ("report", RunStatus.SUCCEEDED, Trigger.MANUAL),
            ("export", RunStatus.TIMED_OUT, Trigger.SCHEDULE), ("report", RunStatus.FAILED, Trigger.BACKFILL),
            ("export", RunStatus.CANCELLED, Trigger.MANUAL), ("report", RunStatus.QUEUED, Trigger.SCHEDULE)]
    ids = {}
    for index, (job_id, status, trigger) in enumerate(plan):
        ids[f"r{index}"] = add_run(store, job_id, f"run_{index}_{job_id}", status=status, trigger=trigger,
                                   at=SEED_NOW + timedelta(minutes=index))
    return ids


def run_ids(client: FlaskClient, query: str) -> list[str]:
    response = client.get(f"{CANONICAL}/runs{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [run["run_id"] for run in response.get_json()["data"]]


def test_runs_across_jobs_newest_first_and_paginated(client: FlaskClient, base: str,
                                                     history: dict[str, str]) -> None:
    body = client.get(f"{base}/runs?limit=3").get_json()
    assert [run["run_id"] for run in body["data"]] == [history["r7"], history["r6"], history["r5"]]
    assert body["pagination"] == {"page": 1, "limit": 3, "total": 8}
    last = client.get(f"{base}/runs?limit=3&page=3").get_json()
    assert [run["run_id"] for run in last["data"]] == [history["r1"], history["r0"]]


def test_what_failed_last_night_in_one_call(client: FlaskClient, history: dict[str, str]) -> None:
    since, until = "2026-03-26T10:01:00Z", "2026-03-26T10:05:00Z"  # r1 .. r4
    assert run_ids(client, f"?status=failed&since={since}&until={until}") == [history["r2"], history["r1"]]
    assert run_ids(client, "?status=failed") == [history["r5"], history["r2"], history["r1"]]
    assert run_ids(client, "?trigger=backfill") == [history["r5"], history["r2"]]
    assert run_ids(client, "?job_id=export&status=timed_out") == [history["r4"]]
    assert run_ids(client, "?status=cancelled") == [history["r6"]]
    assert run_ids(client, "?job_id=report&trigger=backfill&status=failed") == [history["r5"]]
    assert run_ids(client, "?since=2026-03-26T10:07:00Z") == [history["r7"]]
    assert run_ids(client, "?until=2026-03-26T10:01:00Z") == [history["r0"]]
    assert run_ids(client, "?job_id=nobody") == []


@pytest.mark.parametrize("query,field", [
    ("?status=exploded", "status"), ("?trigger=cron", "trigger"), ("?job_id=Bad%20Id", "job_id"),
    ("?since=yesterday", "since"), ("?until=2026-03-26T10:00:00", "until"),
    ("?since=2026-03-27T00:00:00Z&until=2026-03-26T00:00:00Z", "until"), ("?page=0", "page"),
    ("?limit=101", "limit"), ("?color=red", "color"), ("?status=failed&status=succeeded", "status"),
])
def test_bad_run_queries_name_the_parameter(client: FlaskClient, base: str, query: str, field: str) -> None:
    error = assert_error(client.get(f"{base}/runs{query}"), 400, "invalid_query")["error"]
    assert field in error["details"], error


def test_the_run_queries_are_indexed(store: MongoStore) -> None:
    indexes = {index["name"]: index["key"] for index in store.runs.list_indexes()}
    assert list(indexes["by_trigger"]) == ["trigger", "created_at", "_id"]
    assert list(indexes["by_status"]) == ["status", "created_at"]  # ?status=… (&since/until)
    assert list(indexes["job_history"]) == ["job_id", "created_at", "_id"]  # ?job_id=…
    assert list(indexes["recent"]) == ["created_at", "_id"]  # no filter, or only since/until


# -- cancel ---------------------------------------------------------------------------


def test_cancelling_a_queued_run_records_it_and_frees_its_lease_reservation(
        client: FlaskClient, base: str, store: MongoStore, clock: FakeClock) -> None:
    create(client, base, job_id="nightly")
    run_id = client.post(f"{base}/jobs/nightly/trigger").get_json()["run_id"]
    assert store.jobs.find_one({"_id": "nightly"})["lease"]["holder"] == reservation_holder(run_id)
    response = client.post(f"{base}/runs/{run_id}/cancel")
    assert response.status_code == 202
    run = response.get_json()
    assert run["status"] == "cancelled" and run["cancel_requested"] is True
    assert run["error"]["type"] == "cancelled" and run["finished_at"] is not None
    assert store.jobs.find_one({"_id": "nightly"})["lease"] is None
    assert client.post(f"{base}/jobs/nightly/trigger").status_code == 202  # the lease is free again
    assert_error(client.post(f"{base}/runs/{run_id}/cancel"), 409, "run_finished")


@pytest.mark.parametrize("status", [RunStatus.PENDING, RunStatus.QUEUED])
def test_cancelling_a_run_that_waits_for_its_retry(client: FlaskClient, store: MongoStore, clock: FakeClock,
                                                   status: RunStatus) -> None:
    create(client, job_id="flaky")
    run_id = add_run(store, "flaky", "run_retry", status=status, attempt=1, lease_token=4,
                     retry_at=SEED_NOW + timedelta(minutes=5))
    run = client.post(f"{CANONICAL}/runs/{run_id}/cancel").get_json()
    assert run["status"] == "cancelled" and run["attempt"] == 1
    assert store.runs.find_one({"_id": run_id})["retry_at"] is None


def test_cancelling_a_running_run_asks_it_to_stop(client: FlaskClient, store: MongoStore) -> None:
    create(client, job_id="long")
    run_id = add_run(store, "long", "run_long", status=RunStatus.RUNNING, attempt=1, lease_token=9,
                     worker="host:1")
    response = client.post(f"{CANONICAL}/runs/{run_id}/cancel")
    assert response.status_code == 202
    run = response.get_json()
    assert run["status"] == "running" and run["cancel_requested"] is True  # its worker stops it
    assert client.post(f"{CANONICAL}/runs/{run_id}/cancel").status_code == 202  # asking again is harmless


@pytest.mark.parametrize("status", sorted(FINAL_RUN_STATUSES))
def test_a_finished_run_cannot_be_cancelled(client: FlaskClient, store: MongoStore, status: RunStatus) -> None:
    create(client, job_id="over")
    run_id = add_run(store, "over", f"run_{status}", status=status)
    body = assert_error(client.post(f"{CANONICAL}/runs/{run_id}/cancel"), 409, "run_finished")
    assert body["error"]["details"] == {"run_id": run_id, "status": str(status)}
    assert store.runs.find_one({"_id": run_id})["status"] == status


def test_cancelling_an_unknown_run_is_a_404(client: FlaskClient, base: str) -> None:
    assert_error(client.post(f"{base}/runs/run_nope/cancel"), 404, "run_not_found")
