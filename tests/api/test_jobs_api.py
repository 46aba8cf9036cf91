"""GET/POST /jobs, GET/PUT/DELETE /jobs/:id (SPEC §3), in both path forms."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient

from cronhive.domain import jitter_offset
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, FakeClock, assert_error, create, job_body

DETAIL_FIELDS = {
    "job_id", "name", "schedule", "timezone", "handler", "args", "enabled", "status", "lock_acquired",
    "last_triggered_at", "last_run_status", "last_run_duration_ms", "next_trigger_at", "created_at",
    "updated_at", "misfire_policy", "misfire_grace_s", "overlap_policy", "jitter_s", "timeout_s", "max_retries",
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- create -------------------------------------------------------------------


def test_create_answers_201_with_location_and_every_detail_field(client: FlaskClient, clock: FakeClock, base: str) -> None:
    response = client.post(f"{base}/jobs", json=job_body())
    assert response.status_code == 201
    job = response.get_json()
    assert set(job) >= DETAIL_FIELDS
    assert response.headers["Location"] == f"{base}/jobs/{job['job_id']}"
    fetched = client.get(response.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.get_json() == job


def test_create_fills_the_defaults_and_nulls(client: FlaskClient, clock: FakeClock) -> None:
    job = create(client)
    assert job["job_id"] == "job_nightly_export"
    assert job["timezone"] == "UTC" and job["args"] == {} and job["enabled"] is True
    assert job["status"] == "active" and job["lock_acquired"] is False
    assert (job["misfire_policy"], job["misfire_grace_s"], job["overlap_policy"]) == ("fire_once", 60, "forbid")
    assert (job["jitter_s"], job["timeout_s"], job["max_retries"]) == (0, 3600, 0)
    for key in ("last_triggered_at", "last_run_status", "last_run_duration_ms"):
        assert key in job and job[key] is None
    assert job["created_at"] == job["updated_at"] == "2026-03-26T10:00:00Z"
    assert job["next_trigger_at"] == "2026-03-27T03:00:00Z"


def test_create_keeps_every_given_field(client: FlaskClient, clock: FakeClock) -> None:
    job = create(
        client, job_id="export-1", timezone="Europe/Berlin", args={"to": ["ops@example.com"], "n": 3, "deep": {"x": None}},
        enabled=True, misfire_policy="fire_all", misfire_grace_s=0, overlap_policy="buffer_one", jitter_s=0,
        timeout_s=20, max_retries=5, handler="sleep",
    )
    assert job["job_id"] == "export-1" and job["handler"] == "sleep"
    assert job["timezone"] == "Europe/Berlin"
    assert job["args"] == {"to": ["ops@example.com"], "n": 3, "deep": {"x": None}}
    assert (job["misfire_policy"], job["misfire_grace_s"], job["overlap_policy"]) == ("fire_all", 0, "buffer_one")
    assert (job["timeout_s"], job["max_retries"]) == (20, 5)
    assert job["next_trigger_at"] == "2026-03-27T02:00:00Z"  # 03:00 in Berlin (CET, UTC+1)


def test_same_name_twice_gives_distinct_generated_ids(client: FlaskClient, base: str) -> None:
    first = create(client, base, name="Daily Reminder Check")
    second = create(client, base, name="Daily Reminder Check")
    third = create(client, base, name="daily reminder check!")
    assert first["job_id"] == "job_daily_reminder_check"
    assert second["job_id"] == "job_daily_reminder_check_2"
    assert third["job_id"] == "job_daily_reminder_check_3"


def test_generated_ids_are_valid_for_any_name(client: FlaskClient) -> None:
    for name in ("Ünïcödé Ñame", "  padded  ", "日本語のジョブ", "x" * 200, "--__--", "🎉"):
        job = create(client, name=name)
        assert job["name"] == name
        assert job["job_id"].startswith("job_") and len(job["job_id"]) <= 64
        assert client.get(f"{CANONICAL}/jobs/{job['job_id']}").status_code == 200


@pytest.mark.parametrize(("name", "job_id"), [
    ("Отчёт за день", "job_otchet_za_den"),
    ("日本語のジョブ", "job_ri_ben_yu_nosiyohu"),
    ("Crème brûlée à 8h", "job_creme_brulee_a_8h"),
    ("Ελληνικά", "job_ellenika"),
    ("Straße", "job_strasse"),
])
def test_non_ascii_names_are_transliterated_into_ids(client: FlaskClient, name: str, job_id: str) -> None:
    assert create(client, name=name)["job_id"] == job_id


def test_names_with_nothing_to_transliterate_get_distinct_hashed_ids(client: FlaskClient) -> None:
    ids = [create(client, name=name)["job_id"] for name in ("🎉", "🚀", "!!!", "🎉")]
    assert all(re.fullmatch(r"job_[0-9a-f]{8}(_2)?", job_id) for job_id in ids), ids
    assert len(set(ids)) == 4
    assert ids[3] == ids[0] + "_2"  # the same name again: numbered, as any name


def test_duplicate_job_id_is_409(client: FlaskClient, base: str) -> None:
    create(client, base, job_id="nightly")
    response = client.post(f"{base}/jobs", json=job_body(job_id="nightly", name="Another"))
    body = assert_error(response, 409, "duplicate_job")
    assert "lock_acquired" not in body
    assert client.get(f"{base}/jobs/nightly").get_json()["name"] == "Nightly export"


def test_create_disabled_job_has_no_next_trigger(client: FlaskClient, clock: FakeClock) -> None:
    job = create(client, enabled=False)
    assert job["status"] == "disabled" and job["enabled"] is False
    assert job["next_trigger_at"] is None


def test_next_trigger_at_includes_the_jobs_jitter(client: FlaskClient, clock: FakeClock) -> None:
    job = create(client, job_id="jittered", schedule="0 * * * *", jitter_s=600)
    slot = utc(2026, 3, 26, 11)
    expected = slot + jitter_offset("jittered", 600)
    assert job["next_trigger_at"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert slot <= expected < slot + timedelta(seconds=600)


def test_next_trigger_at_follows_dst_in_the_jobs_time_zone(client: FlaskClient, clock: FakeClock) -> None:
    clock.set(utc(2026, 3, 28, 12))
    job = create(client, schedule="30 2 * * *", timezone="Europe/Berlin")
    assert job["next_trigger_at"] == "2026-03-29T01:00:00Z"  # 02:30 does not exist: first instant after the gap


# -- read -----------------------------------------------------------------------


def test_get_unknown_job_is_404(client: FlaskClient, base: str) -> None:
    body = assert_error(client.get(f"{base}/jobs/no_such_job"), 404, "job_not_found")
    assert body["error"]["details"] == {"job_id": "no_such_job"}


def test_list_is_empty_at_first(client: FlaskClient, base: str) -> None:
    response = client.get(f"{base}/jobs")
    assert response.status_code == 200
    assert response.get_json() == {"data": [], "pagination": {"page": 1, "limit": 20, "total": 0}}


def test_list_pages_in_creation_order_then_id(client: FlaskClient, clock: FakeClock, base: str) -> None:
    create(client, job_id="c-first")
    clock.advance(seconds=1)
    for job_id in ("z-same", "a-same", "m-same"):  # same created_at: ordered by id
        create(client, job_id=job_id)
    clock.advance(seconds=1)
    create(client, job_id="b-last")
    expected = ["c-first", "a-same", "m-same", "z-same", "b-last"]

    everything = client.get(f"{base}/jobs").get_json()
    assert [job["job_id"] for job in everything["data"]] == expected
    pages = [client.get(f"{base}/jobs?page={page}&limit=2").get_json() for page in (1, 2, 3, 4)]
    assert [[job["job_id"] for job in page["data"]] for page in pages] == [expected[0:2], expected[2:4], expected[4:], []]
    assert [page["pagination"] for page in pages] == [{"page": p, "limit": 2, "total": 5} for p in (1, 2, 3, 4)]
    assert client.get(f"{base}/jobs?limit=100").get_json()["pagination"] == {"page": 1, "limit": 100, "total": 5}


def test_list_filters_by_status_and_handler(client: FlaskClient, base: str) -> None:
    create(client, job_id="a1", handler="noop")
    create(client, job_id="a2", handler="sleep")
    create(client, job_id="d1", handler="noop", enabled=False)

    def ids(query: str) -> tuple[list[str], int]:
        body = client.get(f"{base}/jobs?{query}").get_json()
        return [job["job_id"] for job in body["data"]], body["pagination"]["total"]

    assert ids("status=active") == (["a1", "a2"], 2)
    assert ids("status=disabled") == (["d1"], 1)
    assert ids("handler=noop") == (["a1", "d1"], 2)
    assert ids("handler=noop&status=active") == (["a1"], 1)
    assert ids("handler=fail") == ([], 0)
    assert ids("status=active&limit=1&page=2") == (["a2"], 2)


# -- update ---------------------------------------------------------------------


def test_put_schedule_recomputes_next_trigger_from_now(client: FlaskClient, clock: FakeClock, base: str) -> None:
    job = create(client, schedule="0 8 * * *")
    assert job["next_trigger_at"] == "2026-03-27T08:00:00Z"
    clock.advance(hours=1)
    response = client.put(f"{base}/jobs/{job['job_id']}", json={"schedule": "*/15 * * * *"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["schedule"] == "*/15 * * * *"
    assert body["next_trigger_at"] == "2026-03-26T11:15:00Z"
    assert body["updated_at"] == "2026-03-26T11:00:00Z"
    assert body["created_at"] == "2026-03-26T10:00:00Z"
    assert client.get(f"{base}/jobs/{job['job_id']}").get_json() == body


def test_put_timezone_recomputes_next_trigger(client: FlaskClient, clock: FakeClock) -> None:
    job = create(client, schedule="0 8 * * *")
    body = client.put(f"{CANONICAL}/jobs/{job['job_id']}", json={"timezone": "America/New_York"}).get_json()
    assert body["timezone"] == "America/New_York"
    assert body["next_trigger_at"] == "2026-03-26T12:00:00Z"  # 08:00 EDT


def test_disable_then_enable(client: FlaskClient, clock: FakeClock, store: MongoStore, base: str) -> None:
    job = create(client, schedule="0 8 * * *")
    url = f"{base}/jobs/{job['job_id']}"

    clock.advance(minutes=5)
    disabled = client.put(url, json={"enabled": False}).get_json()
    assert disabled["status"] == "disabled" and disabled["enabled"] is False
    assert disabled["next_trigger_at"] is None
    assert disabled["updated_at"] == "2026-03-26T10:05:00Z"
    doc = store.jobs.find_one({"_id": job["job_id"]})
    assert doc["due_at"] is None and doc["next_fire_at"] == utc(2026, 3, 27, 8)  # the slot it waited for is kept

    clock.advance(days=3)  # the 27th's slot was missed while disabled
    enabled = client.put(url, json={"enabled": True}).get_json()
    assert enabled["status"] == "active" and enabled["enabled"] is True
    assert enabled["updated_at"] == "2026-03-29T10:05:00Z"
    # the missed slot is due again: the scheduler applies the misfire policy to it
    assert enabled["next_trigger_at"] == "2026-03-27T08:00:00Z"
    assert store.jobs.find_one({"_id": job["job_id"]})["revision"] == 3


def test_schedule_change_while_disabled_counts_from_the_change(client: FlaskClient, clock: FakeClock) -> None:
    job = create(client, schedule="0 8 * * *", enabled=False)
    url = f"{CANONICAL}/jobs/{job['job_id']}"
    clock.advance(hours=2)
    changed = client.put(url, json={"schedule": "0 9 * * *"}).get_json()
    assert changed["status"] == "disabled" and changed["next_trigger_at"] is None
    clock.advance(hours=1)
    assert client.put(url, json={"enabled": True}).get_json()["next_trigger_at"] == "2026-03-27T09:00:00Z"


def test_put_changes_the_other_mutable_fields(client: FlaskClient, clock: FakeClock) -> None:
    job = create(client)
    changes = {
        "name": "Renamed", "handler": "sleep", "args": {"seconds": 2}, "misfire_policy": "skip",
        "misfire_grace_s": 5, "overlap_policy": "allow", "timeout_s": 10, "max_retries": 3,
    }
    body = client.put(f"{CANONICAL}/jobs/{job['job_id']}", json=changes).get_json()
    for key, value in changes.items():
        assert body[key] == value, key
    assert body["job_id"] == job["job_id"] and body["next_trigger_at"] == job["next_trigger_at"]


def test_put_unknown_job_is_404(client: FlaskClient, base: str) -> None:
    assert_error(client.put(f"{base}/jobs/nope", json={"enabled": False}), 404, "job_not_found")


def test_put_cannot_change_the_job_id(client: FlaskClient) -> None:
    job = create(client)
    body = assert_error(client.put(f"{CANONICAL}/jobs/{job['job_id']}", json={"job_id": "other"}), 422)
    assert "job_id" in body["error"]["details"]
    assert client.get(f"{CANONICAL}/jobs/other").status_code == 404


# -- delete ---------------------------------------------------------------------


def test_delete_removes_the_job(client: FlaskClient, base: str) -> None:
    job = create(client)
    response = client.delete(f"{base}/jobs/{job['job_id']}")
    assert response.status_code == 200
    assert response.get_json() == {"deleted": True, "job_id": job["job_id"]}
    assert_error(client.get(f"{base}/jobs/{job['job_id']}"), 404)
    assert_error(client.delete(f"{base}/jobs/{job['job_id']}"), 404, "job_not_found")
    assert client.get(f"{base}/jobs").get_json()["pagination"]["total"] == 0


def test_a_job_re_created_after_a_delete_starts_with_no_history_lease_or_last_run(
        client: FlaskClient, store: MongoStore, clock: FakeClock) -> None:
    create(client, job_id="again", overlap_policy="forbid")
    triggered = client.post(f"{CANONICAL}/jobs/again/trigger").get_json()  # holds the job's lease
    store.jobs.update_one({"_id": "again"}, {"$set": {"last_run_id": triggered["run_id"],
                                                      "last_run_status": "succeeded", "last_run_duration_ms": 5}})
    assert client.get(f"{CANONICAL}/jobs/again/runs").get_json()["pagination"]["total"] == 1
    assert client.get(f"{CANONICAL}/jobs/again").get_json()["lock_acquired"] is True

    assert client.delete(f"{CANONICAL}/jobs/again").status_code == 200
    assert store.runs.count_documents({"job_id": "again"}) == 0
    again = create(client, job_id="again", overlap_policy="forbid")
    assert again["job_id"] == "again" and again["lock_acquired"] is False
    assert (again["last_run_id"], again["last_run_status"], again["last_run_duration_ms"]) == (None, None, None)
    assert again["last_triggered_at"] is None
    assert client.get(f"{CANONICAL}/jobs/again/runs").get_json() == {
        "data": [], "pagination": {"page": 1, "limit": 20, "total": 0}}
    # a run written for the deleted job racing the delete (its old incarnation) stays out of the new history
    store.runs.insert_one({"_id": "run_straggler", "job_id": "again", "trigger": "manual", "status": "queued",
                           "created_at": clock.now(), "job_incarnation": "deleted-one"})
    assert client.get(f"{CANONICAL}/jobs/again/runs").get_json()["pagination"]["total"] == 0
    second = client.post(f"{CANONICAL}/jobs/again/trigger")
    assert second.status_code == 202  # no lease left over from the deleted job
    assert [run["run_id"] for run in client.get(f"{CANONICAL}/jobs/again/runs").get_json()["data"]] == [
        second.get_json()["run_id"]]
