"""Bounded schedules through the API: ``start_at``, ``end_at``, ``max_fires`` on create
and update, ``fires_left`` and ``completed`` in the view and the list filter, and bad
input for each field (the scheduler side: tests/shared/test_bounded_slots.py and
tests/scheduler/test_bounded_schedule_processes.py)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.enums import JobStatus
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, FakeClock, assert_error, create, job_body


def test_a_bounded_job_shows_its_bounds_and_fires_left(client: FlaskClient, base: str, clock: FakeClock) -> None:
    job = create(client, base, job_id="spring", schedule="0 6 * * *", start_at="2026-04-01T08:30:00+02:00",
                 end_at="2026-04-05T00:00:00Z", max_fires=3)
    assert (job["start_at"], job["end_at"], job["max_fires"], job["fires_left"]) == (
        "2026-04-01T06:30:00Z", "2026-04-05T00:00:00Z", 3, 3)
    assert job["status"] == "active" and job["next_trigger_at"] == "2026-04-02T06:00:00Z"  # 04-01 06:00 is before start_at
    plain = create(client, base, job_id="plain")
    assert (plain["start_at"], plain["end_at"], plain["max_fires"], plain["fires_left"]) == (None, None, None, None)


def test_a_job_whose_bounds_are_over_is_completed_and_listed_so(client: FlaskClient, base: str,
                                                               clock: FakeClock) -> None:
    done = create(client, base, job_id="over", end_at="2026-03-01T00:00:00Z")  # before the clock's now
    assert done["status"] == "completed" and done["next_trigger_at"] is None and done["enabled"] is True
    create(client, base, job_id="live", max_fires=2)
    create(client, base, job_id="off", enabled=False, end_at="2026-03-01T00:00:00Z")
    listed = {status: [job["job_id"] for job in client.get(f"{base}/jobs?status={status}").get_json()["data"]]
              for status in ("active", "completed", "disabled")}
    assert listed == {"active": ["live"], "completed": ["over"], "disabled": ["off"]}
    # manual triggers and backfills still run a completed job
    assert client.post(f"{base}/jobs/over/trigger").status_code == 202
    assert client.post(f"{base}/jobs/over/backfill", json={"start": "2026-02-01T00:00:00Z",
                                                          "end": "2026-02-02T00:00:00Z"}).status_code == 202
    # a PUT extending the bounds makes it active again; null removes a bound
    reopened = client.put(f"{base}/jobs/over", json={"end_at": None}).get_json()
    assert reopened["status"] == "active" and reopened["end_at"] is None and reopened["next_trigger_at"]


def test_an_update_checks_end_at_against_the_stored_start_at(client: FlaskClient, base: str,
                                                              store: MongoStore, clock: FakeClock) -> None:
    create(client, base, job_id="window", start_at="2026-04-01T00:00:00Z")
    error = assert_error(client.put(f"{base}/jobs/window", json={"end_at": "2026-03-31T00:00:00Z"}), 422)["error"]
    assert "end_at" in error["details"]
    create(client, base, job_id="window2", end_at="2026-04-01T00:00:00Z")
    error = assert_error(client.put(f"{base}/jobs/window2", json={"start_at": "2026-04-02T00:00:00Z"}), 422)["error"]
    assert "end_at" in error["details"]
    ok = client.put(f"{base}/jobs/window", json={"end_at": "2026-04-02T00:00:00Z"})
    assert ok.status_code == 200 and ok.get_json()["end_at"] == "2026-04-02T00:00:00Z"
    assert store.get_job("window").end_at is not None


@pytest.mark.parametrize("fields,field", [
    ({"start_at": "2026-04-02T00:00:00Z", "end_at": "2026-04-01T00:00:00Z"}, "end_at"),
    ({"start_at": "2026-04-01T00:00:00Z", "end_at": "2026-04-01T00:00:00Z"}, "end_at"),
    ({"start_at": "2026-04-01T00:00:00"}, "start_at"),
    ({"end_at": "soon"}, "end_at"),
    ({"end_at": 1775000000}, "end_at"),
    ({"start_at": "1969-12-31T23:59:59Z"}, "start_at"),
    ({"max_fires": 0}, "max_fires"),
    ({"max_fires": -1}, "max_fires"),
    ({"max_fires": "3"}, "max_fires"),
    ({"max_fires": 1.5}, "max_fires"),
    ({"max_fires": True}, "max_fires"),
    ({"max_fires": 10**10}, "max_fires"),
])
def test_bad_bounds_are_a_422_naming_the_field(client: FlaskClient, base: str, fields: dict[str, Any],
                                                field: str) -> None:
    error = assert_error(client.post(f"{base}/jobs", json=job_body(**fields)), 422, "validation_error")["error"]
    assert field in error["details"], error
    create(client, base, job_id="target")
    error = assert_error(client.put(f"{base}/jobs/target", json=fields), 422, "validation_error")["error"]
    assert field in error["details"], error


def test_bounds_can_be_given_as_null(client: FlaskClient) -> None:
    job = create(client, CANONICAL, job_id="nulls", start_at=None, end_at=None, max_fires=None)
    assert job["status"] == "active" and job["fires_left"] is None


def test_the_dashboard_search_filters_completed_jobs_by_text_too(client: FlaskClient, store: MongoStore,
                                                                clock: FakeClock) -> None:
    create(client, job_id="over_report", end_at="2026-03-01T00:00:00Z")
    create(client, job_id="over_export", end_at="2026-03-01T00:00:00Z")
    create(client, job_id="live_report", max_fires=1)
    now = clock.now()
    found = store.browse_jobs(10, now, status=JobStatus.COMPLETED, text="report")
    assert [job.job_id for job in found.jobs] == ["over_report"]
    assert [job.job_id for job in store.browse_jobs(10, now, status=JobStatus.ACTIVE, text="report").jobs] == [
        "live_report"]
    assert [job.job_id for job in store.browse_jobs(10, now, status=JobStatus.COMPLETED).jobs] == [
        "over_export", "over_report"]  # created at one instant: by id
