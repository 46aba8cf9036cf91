"""The seed contract's example requests, sent verbatim, give its response shapes.

With the app's clock at the seed's instant (2026-03-26T10:00:00Z) even the
values line up: created_at, next_trigger_at, updated_at 24 minutes later, the
trigger a minute after that and its ``run_20260326_102500…`` run id.
"""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from tests.api.conftest import SEED_CREATE, SEED_UPDATE, Z_SECONDS, FakeClock

JSON = "application/json"

SEED_LIST_ITEM = {"job_id", "name", "schedule", "status", "last_triggered_at", "next_trigger_at"}
SEED_DETAIL = {"job_id", "name", "schedule", "status", "lock_acquired", "last_triggered_at",
               "last_run_duration_ms", "next_trigger_at"}
SEED_CREATED = {"job_id", "name", "schedule", "status", "created_at"}
SEED_UPDATED = {"job_id", "schedule", "status", "updated_at"}
SEED_DELETED = {"deleted", "job_id"}
SEED_TRIGGERED = {"job_id", "triggered_at", "lock_acquired", "run_id"}


def assert_instant(value: object) -> None:
    assert isinstance(value, str) and re.match(Z_SECONDS, value), value


def test_the_seed_examples_verbatim(client: FlaskClient, clock: FakeClock, base: str) -> None:
    # POST /jobs (Register a new cron job)
    created = client.post(f"{base}/jobs", data=SEED_CREATE, content_type=JSON)
    assert created.status_code == 201
    job = created.get_json()
    assert set(job) >= SEED_CREATED
    assert job["job_id"] == "job_daily_reminder_check"
    assert (job["name"], job["schedule"], job["status"]) == ("Daily Reminder Check", "0 8 * * *", "active")
    assert job["created_at"] == "2026-03-26T10:00:00Z"
    assert job["next_trigger_at"] == "2026-03-27T08:00:00Z"
    assert created.headers["Location"] == f"{base}/jobs/job_daily_reminder_check"
    job_id = job["job_id"]

    # GET /jobs (List all registered cron jobs)
    listed = client.get(f"{base}/jobs")
    assert listed.status_code == 200
    page = listed.get_json()
    assert set(page) == {"data", "pagination"}
    assert page["pagination"] == {"page": 1, "limit": 20, "total": 1}
    (item,) = page["data"]
    assert set(item) >= SEED_LIST_ITEM
    assert item["status"] == "active" and item["last_triggered_at"] is None
    assert item["next_trigger_at"] == "2026-03-27T08:00:00Z"

    # GET /jobs/:id (Get details for a specific cron job)
    detail = client.get(f"{base}/jobs/{job_id}")
    assert detail.status_code == 200
    body = detail.get_json()
    assert set(body) >= SEED_DETAIL
    assert body["lock_acquired"] is False
    assert body["last_run_duration_ms"] is None

    # PUT /jobs/:id (Update cron schedule or enable/disable a job), 24 minutes later
    clock.advance(minutes=24)
    updated = client.put(f"{base}/jobs/{job_id}", data=SEED_UPDATE, content_type=JSON)
    assert updated.status_code == 200
    body = updated.get_json()
    assert set(body) >= SEED_UPDATED
    assert (body["job_id"], body["schedule"], body["status"]) == (job_id, "0 7 * * *", "active")
    assert body["updated_at"] == "2026-03-26T10:24:00Z"
    assert body["next_trigger_at"] == "2026-03-27T07:00:00Z"

    # POST /jobs/:id/trigger (Manually trigger a cron job immediately)
    clock.advance(minutes=1)
    triggered = client.post(f"{base}/jobs/{job_id}/trigger")
    assert triggered.status_code == 202
    body = triggered.get_json()
    assert set(body) == SEED_TRIGGERED
    assert body["job_id"] == job_id
    assert body["triggered_at"] == "2026-03-26T10:25:00Z"
    assert body["lock_acquired"] is True
    assert re.match(r"^run_20260326_102500", body["run_id"]), body["run_id"]

    after = client.get(f"{base}/jobs/{job_id}").get_json()
    assert after["lock_acquired"] is True
    assert after["last_triggered_at"] == "2026-03-26T10:25:00Z"

    # DELETE /jobs/:id (Unregister a cron job)
    deleted = client.delete(f"{base}/jobs/{job_id}")
    assert deleted.status_code == 200
    assert deleted.get_json() == {"deleted": True, "job_id": job_id}
    assert client.get(f"{base}/jobs/{job_id}").status_code == 404


def test_timestamps_are_utc_z_with_whole_seconds(client: FlaskClient, clock: FakeClock) -> None:
    clock.advance(microseconds=987_000)  # the database keeps milliseconds; the API shows seconds
    job = client.post("/api/v1/cron/jobs", data=SEED_CREATE, content_type=JSON).get_json()
    for key in ("created_at", "updated_at", "next_trigger_at"):
        assert_instant(job[key])
    assert job["created_at"] == "2026-03-26T10:00:00Z"
    run = client.post(f"/api/v1/cron/jobs/{job['job_id']}/trigger").get_json()
    assert_instant(run["triggered_at"])
    assert re.match(r"^run_\d{8}_\d{6}_[0-9a-f]+$", run["run_id"])
