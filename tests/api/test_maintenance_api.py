"""Tags on jobs (validated, filtered through an index) and maintenance windows
through the API: created, listed by state, read, ended early; the jobs they name
show ``paused`` with ``paused_until`` while open, and manual triggers still run."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings, parse_api_tokens
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, SEED_NOW, FakeClock, create

MAINT = f"{CANONICAL}/maintenance"


def window(client: FlaskClient, **body: Any) -> dict[str, Any]:
    response = client.post(MAINT, json=body)
    assert response.status_code == 201, response.get_json()
    assert response.headers["Location"].endswith(response.get_json()["maintenance_id"])
    return response.get_json()


@pytest.mark.parametrize("tags", [["billing"], ["a", "b.c", "d-e_f", "0" * 64], [f"t{i}" for i in range(20)], []])
def test_valid_tags_are_kept_in_order(client: FlaskClient, tags: list[str]) -> None:
    job = create(client, tags=tags)
    assert job["tags"] == tags and job["paused_until"] is None
    assert client.get(f"{CANONICAL}/jobs/{job['job_id']}").get_json()["tags"] == tags


@pytest.mark.parametrize("tags", [["Billing"], ["-x"], ["a b"], ["x" * 65], [""], ["a\n"], [f"t{i}" for i in range(21)],
                                  ["dup", "dup"], "billing", [1]])
def test_invalid_tags_are_a_422_naming_the_field(client: FlaskClient, tags: Any) -> None:
    response = client.post(f"{CANONICAL}/jobs", json={"name": "x", "schedule": "0 3 * * *", "handler": "noop",
                                                      "tags": tags})
    assert response.status_code == 422, response.get_json()
    assert "tags" in response.get_json()["error"]["details"]


def test_tag_filter_uses_the_index_and_update_replaces_tags(client: FlaskClient, store: MongoStore) -> None:
    a = create(client, job_id="a", tags=["billing", "nightly"])
    create(client, job_id="b", tags=["nightly"])
    create(client, job_id="c")
    page = client.get(f"{CANONICAL}/jobs?tag=billing").get_json()
    assert [job["job_id"] for job in page["data"]] == ["a"] and page["pagination"]["total"] == 1
    assert [job["job_id"] for job in client.get(f"{CANONICAL}/jobs?tag=nightly").get_json()["data"]] == ["a", "b"]
    assert client.get(f"{CANONICAL}/jobs?tag=Bad!").status_code == 400
    updated = client.put(f"{CANONICAL}/jobs/{a['job_id']}", json={"tags": ["nightly"]}).get_json()
    assert updated["tags"] == ["nightly"]
    assert client.get(f"{CANONICAL}/jobs?tag=billing").get_json()["data"] == []
    plan = store.jobs.find({"tags": "nightly"}).sort([("created_at", 1), ("_id", 1)]).explain()
    assert "by_tag" in str(plan), plan


def test_a_window_pauses_its_jobs_while_open_and_ends_by_itself(client: FlaskClient, clock: FakeClock) -> None:
    create(client, job_id="tagged", tags=["billing"])
    create(client, job_id="byid")
    create(client, job_id="other", tags=["other"])
    create(client, job_id="off", tags=["billing"], enabled=False)
    start, end = "2026-03-26T11:00:00Z", "2026-03-26T12:00:00Z"
    planned = window(client, tags=["billing"], start=start, end=end, reason="db upgrade")
    assert planned["status"] == "upcoming" and planned["tags"] == ["billing"] and planned["job_ids"] is None
    by_id = window(client, job_ids=["byid"], end="2026-03-26T10:30:00Z")
    assert by_id["status"] == "active" and by_id["start"] == "2026-03-26T10:00:00Z"  # start defaults to now

    def status(job_id: str) -> tuple[str, str | None]:
        job = client.get(f"{CANONICAL}/jobs/{job_id}").get_json()
        return job["status"], job["paused_until"]

    assert status("tagged") == ("active", None)
    assert status("byid") == ("paused", "2026-03-26T10:30:00Z")
    assert [job["job_id"] for job in client.get(f"{CANONICAL}/jobs?status=paused").get_json()["data"]] == ["byid"]
    clock.set(SEED_NOW.replace(hour=11, minute=30))
    assert status("tagged") == ("paused", end) and status("byid") == ("active", None)
    assert status("other") == ("active", None) and status("off") == ("disabled", None)
    listed = {job["job_id"]: job["status"] for job in client.get(f"{CANONICAL}/jobs").get_json()["data"]}
    assert listed == {"tagged": "paused", "byid": "active", "other": "active", "off": "disabled"}
    for wanted, expected in (("paused", ["tagged"]), ("active", ["byid", "other"]), ("disabled", ["off"])):
        page = client.get(f"{CANONICAL}/jobs?status={wanted}").get_json()
        assert [job["job_id"] for job in page["data"]] == expected and page["pagination"]["total"] == len(expected)
    assert client.get(f"{CANONICAL}/jobs?status=paused&tag=other").get_json()["data"] == []
    page = client.get("/ui/jobs/tagged").get_data(as_text=True)
    assert "maintenance window until 2026-03-26 12:00:00 UTC" in page and 'class="badge skip"' in page
    # manual triggers still run during a window
    assert client.post(f"{CANONICAL}/jobs/tagged/trigger").status_code == 202
    states = {w["maintenance_id"]: w["status"] for w in client.get(MAINT).get_json()["data"]}
    assert states == {planned["maintenance_id"]: "active", by_id["maintenance_id"]: "ended"}
    active = client.get(f"{MAINT}?status=active").get_json()
    assert [w["maintenance_id"] for w in active["data"]] == [planned["maintenance_id"]]
    assert active["pagination"] == {"page": 1, "limit": 20, "total": 1}
    clock.set(SEED_NOW.replace(hour=12))
    assert status("tagged") == ("active", None)  # ended by itself at its end (exclusive)


def test_ending_a_window_early(client: FlaskClient, clock: FakeClock) -> None:
    create(client, job_id="tagged", tags=["billing"])
    open_one = window(client, tags=["billing"], end="2026-03-26T12:00:00Z")
    later = window(client, tags=["billing"], start="2026-03-27T00:00:00Z", end="2026-03-27T01:00:00Z")
    clock.advance(minutes=5)
    ended = client.delete(f"{MAINT}/{open_one['maintenance_id']}").get_json()
    assert ended["status"] == "ended" and ended["ended_early"] is True
    assert ended["end"] == "2026-03-26T10:05:00Z" and ended["planned_end"] == "2026-03-26T12:00:00Z"
    assert client.get(f"{CANONICAL}/jobs/tagged").get_json()["status"] == "active"
    cancelled = client.delete(f"{MAINT}/{later['maintenance_id']}").get_json()
    assert cancelled["status"] == "ended" and cancelled["ended_early"] is True
    clock.set(SEED_NOW.replace(day=27, minute=30))
    assert client.get(f"{CANONICAL}/jobs/tagged").get_json()["status"] == "active"  # a cancelled one never opens
    again = client.delete(f"{MAINT}/{open_one['maintenance_id']}").get_json()
    assert again["end"] == "2026-03-26T10:05:00Z"  # ending an ended window changes nothing
    assert client.get(f"{MAINT}/{open_one['maintenance_id']}").get_json() == again
    missing = client.get(f"{MAINT}/mnt_nope")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "maintenance_not_found"
    assert client.delete(f"{MAINT}/mnt_nope").status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"end": "2026-03-26T12:00:00Z"}, "_schema"),
    ({"tags": ["a"], "job_ids": ["b"], "end": "2026-03-26T12:00:00Z"}, "_schema"),
    ({"tags": [], "end": "2026-03-26T12:00:00Z"}, "tags"),
    ({"tags": ["Bad"], "end": "2026-03-26T12:00:00Z"}, "tags"),
    ({"job_ids": [], "end": "2026-03-26T12:00:00Z"}, "job_ids"),
    ({"tags": ["a"]}, "end"),
    ({"tags": ["a"], "end": "2026-03-26T09:00:00Z"}, "end"),  # in the past
    ({"tags": ["a"], "start": "2026-03-26T13:00:00Z", "end": "2026-03-26T12:00:00Z"}, "end"),
    ({"tags": ["a"], "end": "2026-03-26T12:00:00"}, "end"),  # naive
    ({"tags": ["a"], "end": "2026-03-26T12:00:00Z", "reason": ""}, "reason"),
    ({"tags": ["a"], "end": "2026-03-26T12:00:00Z", "extra": 1}, "extra"),
])
def test_invalid_windows_are_a_422(client: FlaskClient, clock: FakeClock, body: dict[str, Any], field: str) -> None:
    response = client.post(MAINT, json=body)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["error"]["details"], response.get_json()


def test_windows_need_a_write_token_and_record_its_name(settings: Settings, store: MongoStore) -> None:
    app = create_app(settings.replace(api_tokens=parse_api_tokens("ops:s3cret-ops,viewer:s3cret-view:read")))
    try:
        client = app.test_client()
        body = {"tags": ["billing"], "end": "2099-01-01T00:00:00Z"}
        assert client.post(MAINT, json=body).status_code == 401
        assert client.post(MAINT, json=body, headers={"Authorization": "Bearer s3cret-view"}).status_code == 403
        created = client.post(MAINT, json=body, headers={"Authorization": "Bearer s3cret-ops"}).get_json()
        assert created["created_by"] == "ops" and created["ended_by"] is None
        path = f"{MAINT}/{created['maintenance_id']}"
        assert client.delete(path, headers={"Authorization": "Bearer s3cret-view"}).status_code == 403
        assert client.get(path).status_code == 200  # reads stay public
        ended = client.delete(path, headers={"Authorization": "Bearer s3cret-ops"}).get_json()
        assert (ended["status"], ended["ended_by"]) == ("ended", "ops")
    finally:
        close_app(app)


def test_an_idempotency_key_opens_one_window_however_often_the_request_is_sent(client: FlaskClient,
                                                                               store: MongoStore) -> None:
    body = {"tags": ["billing"], "end": "2099-01-01T00:00:00Z", "reason": "upgrade"}
    headers = {"Idempotency-Key": "mw-upgrade-1"}
    first = client.post(MAINT, json=body, headers=headers)
    again = client.post(MAINT, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()
    assert store.maintenance.count_documents({}) == 1
    reused = client.post(MAINT, json={**body, "reason": "other"}, headers=headers)
    assert reused.status_code == 422 and reused.get_json()["error"]["code"] == "idempotency_key_reused"
