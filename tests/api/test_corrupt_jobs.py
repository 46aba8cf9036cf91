"""Corrupt job documents (written by hand, an old version, a bad migration): every
endpoint and dashboard page that reads one answers without a 5xx, shows it with
``status: "invalid"`` and an ``invalid_reason`` naming the field, refuses to trigger
it, and a full ``PUT`` repairs it (issue 14, item 1)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, FakeClock, assert_error, create

#: (test id, the change made to a valid job's document, the field invalid_reason names, words it holds)
CORRUPTIONS: list[tuple[str, dict[str, Any], str, str]] = [
    ("no-schedule", {"$unset": {"schedule": ""}}, "schedule", "missing"),
    ("no-name", {"$unset": {"name": ""}}, "name", "missing"),
    ("no-handler", {"$unset": {"handler": ""}}, "handler", "missing"),
    ("schedule-int", {"$set": {"schedule": 5}}, "schedule", "not a string"),
    ("schedule-unparsable", {"$set": {"schedule": "61 * * * *"}}, "schedule", "does not parse"),
    ("bad-timezone", {"$set": {"timezone": "Mars/Olympus_Mons"}}, "timezone", "unknown time zone"),
    ("bad-policy", {"$set": {"misfire_policy": "sometimes"}}, "misfire_policy", "not one of"),
    ("args-list", {"$set": {"args": [1, 2]}}, "args", "not an object"),
    ("grace-string", {"$set": {"misfire_grace_s": "60"}}, "misfire_grace_s", "not an integer"),
    ("enabled-string", {"$set": {"enabled": "yes"}}, "enabled", "not a boolean"),
]
FULL_PUT = {"name": "Repaired", "schedule": "0 4 * * *", "handler": "noop", "timezone": "UTC", "args": {},
            "enabled": True, "misfire_policy": "fire_once", "misfire_grace_s": 60, "overlap_policy": "forbid",
            "jitter_s": 0, "timeout_s": 3600, "max_retries": 0}


def corrupt(store: MongoStore, job_id: str, change: dict[str, Any]) -> None:
    assert store.jobs.update_one({"_id": job_id}, change).matched_count == 1


@pytest.fixture
def jobs(client: FlaskClient, clock: FakeClock) -> list[str]:
    """Three valid jobs around the corrupt one (it is the second of the first page)."""
    return [create(client, job_id=f"job-{n}", name=f"Job {n}")["job_id"] for n in range(3)]


@pytest.mark.parametrize("change,field,words", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_a_corrupt_job_is_served_invalid_everywhere_and_a_full_put_repairs_it(
        client: FlaskClient, store: MongoStore, jobs: list[str], change: dict[str, Any], field: str,
        words: str) -> None:
    broken = jobs[1]
    corrupt(store, broken, change)

    page = client.get(f"{CANONICAL}/jobs?limit=20")
    assert page.status_code == 200, page.get_data(as_text=True)
    listed = {job["job_id"]: job for job in page.get_json()["data"]}
    assert [listed[job_id]["status"] for job_id in jobs] == ["active", "invalid", "active"]
    assert listed[jobs[0]]["invalid_reason"] is None
    reason = listed[broken]["invalid_reason"]
    assert reason.startswith(f"{field}: ") and words in reason, reason
    assert listed[broken]["next_trigger_at"] is None  # it never fires

    detail = client.get(f"{CANONICAL}/jobs/{broken}")
    assert detail.status_code == 200
    assert detail.get_json() == listed[broken]

    refused = assert_error(client.post(f"{CANONICAL}/jobs/{broken}/trigger"), 409, "job_invalid")
    assert field in refused["error"]["message"]
    assert store.runs.count_documents({"job_id": broken}) == 0

    # a PUT that leaves the bad field as stored cannot make a valid job: 422 naming it
    other = "max_retries" if field != "max_retries" else "jitter_s"
    partial = assert_error(client.put(f"{CANONICAL}/jobs/{broken}", json={other: 1}), 422)
    assert field in partial["error"]["details"], partial

    for path in ("/ui/", f"/ui/jobs/{broken}", f"/ui/jobs/{broken}/live", f"/ui/jobs/{broken}/edit", "/ui/live"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:500])
    job_page = client.get(f"/ui/jobs/{broken}").get_data(as_text=True)
    assert 'id="invalid-reason"' in job_page and field in job_page

    repaired = client.put(f"{CANONICAL}/jobs/{broken}", json=FULL_PUT)
    assert repaired.status_code == 200, repaired.get_data(as_text=True)
    job = repaired.get_json()
    assert (job["status"], job["invalid_reason"], job["disabled_reason"]) == ("active", None, None)
    assert job["schedule"] == "0 4 * * *" and job["next_trigger_at"] is not None
    assert client.get(f"{CANONICAL}/jobs/{broken}").get_json()["status"] == "active"
    assert client.post(f"{CANONICAL}/jobs/{broken}/trigger").status_code == 202


def test_invalid_names_every_bad_field_and_shows_missing_text_as_null(
        client: FlaskClient, store: MongoStore, jobs: list[str]) -> None:
    corrupt(store, jobs[0], {"$unset": {"name": "", "handler": ""}, "$set": {"jitter_s": -3}})
    job = client.get(f"{CANONICAL}/jobs/{jobs[0]}").get_json()
    assert job["status"] == "invalid"
    assert job["invalid_reason"] == "name: missing; handler: missing; jitter_s: -3 is outside 0..3600"
    assert (job["name"], job["handler"], job["schedule"]) == (None, None, "0 3 * * *")


def test_a_document_with_only_an_id_is_listed_and_deleted(client: FlaskClient, store: MongoStore,
                                                          jobs: list[str]) -> None:
    store.jobs.insert_one({"_id": "bare"})
    page = client.get(f"{CANONICAL}/jobs?limit=20")
    assert page.status_code == 200
    bare = next(job for job in page.get_json()["data"] if job["job_id"] == "bare")
    assert bare["status"] == "invalid"
    assert bare["invalid_reason"] == "name: missing; schedule: missing; handler: missing"
    overview = client.get("/ui/")
    assert overview.status_code == 200 and ">bare</a>" in overview.get_data(as_text=True)  # named by its id
    bare_page = client.get("/ui/jobs/bare")
    assert bare_page.status_code == 200 and ">None<" not in bare_page.get_data(as_text=True)
    assert client.get("/ui/jobs/bare/live").status_code == 200  # no schedule: no slot strip, no 422
    now = datetime.now(UTC)
    store.jobs.insert_one({"_id": "old", "name": "old", "handler": "noop", "enabled": True, "due_at": now,
                           "next_fire_at": now, "created_at": now, "revision": 1})  # no schedule, revision 1
    for path in ("/ui/jobs/old", "/ui/jobs/old/live"):
        assert client.get(path).status_code == 200, path
    assert store.disable_job("old", 1, "invalid job document: schedule: missing", now, 1)  # as the scheduler does
    for path in ("/ui/jobs/old", "/ui/jobs/old/live", f"{CANONICAL}/jobs/old/revisions"):
        assert client.get(path).status_code == 200, path
    assert client.delete(f"{CANONICAL}/jobs/bare").status_code == 200


def test_the_status_filter_lists_an_invalid_job_under_its_enabled_flag(
        client: FlaskClient, store: MongoStore, jobs: list[str]) -> None:
    corrupt(store, jobs[2], {"$unset": {"schedule": ""}})
    active = client.get(f"{CANONICAL}/jobs?status=active").get_json()["data"]
    assert [job["status"] for job in active] == ["active", "active", "invalid"]
    assert_error(client.get(f"{CANONICAL}/jobs?status=invalid"), 400, "invalid_query")


def test_the_dashboards_actions_on_an_invalid_job_say_why_and_its_edit_form_repairs_it(
        client: FlaskClient, store: MongoStore, jobs: list[str]) -> None:
    broken = jobs[1]
    corrupt(store, broken, {"$set": {"schedule": "not a schedule"}})
    page = client.get(f"/ui/jobs/{broken}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page[:300]
    form = {"csrf_token": token.group(1)}
    for action, words in (("trigger", "Not triggered"), ("pause", "Not paused"), ("resume", "Not resumed")):
        response = client.post(f"/ui/jobs/{broken}/{action}", data=form)
        assert response.status_code == 303, (action, response.get_data(as_text=True)[:300])
        shown = client.get(f"/ui/jobs/{broken}").get_data(as_text=True)
        assert words in shown and "schedule" in shown, action
    assert store.runs.count_documents({"job_id": broken}) == 0

    edited = client.post(f"/ui/jobs/{broken}/edit", data={
        **form, "name": "Job 1", "schedule": "0 6 * * *", "timezone": "UTC", "handler": "noop", "args": "{}",
        "enabled_shown": "1", "enabled": "on", "misfire_policy": "fire_once", "misfire_grace_s": "60",
        "overlap_policy": "forbid", "jitter_s": "0", "timeout_s": "3600", "max_retries": "0"})
    assert edited.status_code == 303, edited.get_data(as_text=True)[:500]
    job = client.get(f"{CANONICAL}/jobs/{broken}").get_json()
    assert (job["status"], job["schedule"], job["invalid_reason"]) == ("active", "0 6 * * *", None)
