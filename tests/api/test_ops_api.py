"""GET /handlers, GET /scheduler, POST /schedules/preview, the OpenAPI document,
/healthz and /readyz."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from cronhive.store import LEADER_LEASE_ID, SCHEDULERS, MongoStore
from tests import services
from tests.api.conftest import CANONICAL, FakeClock, assert_error

BUILT_IN = {"noop", "sleep", "fail", "reminder_scheduler"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- handlers -------------------------------------------------------------------


def test_handlers_lists_the_names_workers_can_run(client: FlaskClient, base: str) -> None:
    response = client.get(f"{base}/handlers")
    assert response.status_code == 200
    data = response.get_json()["data"]
    names = [item["name"] for item in data]
    assert set(names) >= BUILT_IN
    assert names == sorted(names)
    for item in data:
        assert set(item) == {"name", "description"}
        assert item["description"] is None or isinstance(item["description"], str)


# -- scheduler ------------------------------------------------------------------


def test_scheduler_without_a_leader_is_all_nulls(client: FlaskClient, base: str) -> None:
    response = client.get(f"{base}/scheduler")
    assert response.status_code == 200
    assert response.get_json() == {"holder": None, "pid": None, "term": None, "lease_expires_at": None, "standbys": []}


def leader_lease(store: MongoStore, holder: str, token: int, expires_at: datetime) -> None:
    store.leases.replace_one(
        {"_id": LEADER_LEASE_ID},
        {"lease": {"holder": holder, "token": token, "run_id": None, "expires_at": expires_at}, "lease_term": token},
        upsert=True,
    )


def heartbeat(store: MongoStore, name: str, expires_at: datetime) -> None:
    store.db[SCHEDULERS].replace_one({"_id": name}, {"expires_at": expires_at}, upsert=True)


def test_scheduler_shows_the_leader_and_live_standbys(client: FlaskClient, clock: FakeClock, store: MongoStore, base: str) -> None:
    now = clock.now()
    leader_lease(store, "sched-a:4242", 7, now + timedelta(seconds=8))
    heartbeat(store, "sched-a:4242", now + timedelta(seconds=10))
    heartbeat(store, "sched-b:99", now + timedelta(seconds=10))
    heartbeat(store, "sched-c:7", now - timedelta(seconds=1))  # dead: its heartbeat expired
    body = client.get(f"{base}/scheduler").get_json()
    assert body == {
        "holder": "sched-a:4242", "pid": 4242, "term": 7,
        "lease_expires_at": "2026-03-26T10:00:08Z", "standbys": ["sched-b:99"],
    }


def test_scheduler_with_an_expired_leader_lease_has_no_holder(client: FlaskClient, clock: FakeClock, store: MongoStore) -> None:
    leader_lease(store, "sched-a:4242", 3, clock.now())
    heartbeat(store, "sched-b:99", clock.now() + timedelta(seconds=5))
    body = client.get(f"{CANONICAL}/scheduler").get_json()
    assert body["holder"] is None and body["pid"] is None and body["lease_expires_at"] is None
    assert body["term"] == 3 and body["standbys"] == ["sched-b:99"]


# -- schedule preview ---------------------------------------------------------------


def preview(client: FlaskClient, base: str = CANONICAL, **body: Any) -> Any:
    return client.post(f"{base}/schedules/preview", json=body)


def test_preview_shows_spring_forward_in_berlin(client: FlaskClient, base: str) -> None:
    response = preview(client, base, schedule="30 2 * * *", timezone="Europe/Berlin", after="2026-03-27T00:00:00Z", count=4)
    assert response.status_code == 200
    assert response.get_json() == {
        "schedule": "30 2 * * *",
        "timezone": "Europe/Berlin",
        # 02:30 does not exist on the 29th: it fires once, at the first instant after the gap (03:00 CEST)
        "fires": ["2026-03-27T01:30:00Z", "2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
    }


def test_preview_shows_fall_back_in_berlin(client: FlaskClient) -> None:
    body = preview(client, schedule="30 2 * * *", timezone="Europe/Berlin", after="2026-10-24T00:00:00Z", count=3).get_json()
    # 02:30 happens twice on the 25th: a fixed-time job fires once, at the first (CEST) occurrence
    assert body["fires"] == ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]


def test_preview_of_a_wildcard_schedule_follows_the_wall_clock_at_fall_back(client: FlaskClient) -> None:
    body = preview(client, schedule="30 * * * *", timezone="Europe/Berlin", after="2026-10-24T23:00:00Z", count=4).get_json()
    # 02:30 local occurs twice (00:30Z in CEST and 01:30Z in CET): both fire
    assert body["fires"] == ["2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"]


def test_preview_after_is_exclusive(client: FlaskClient) -> None:
    body = preview(client, schedule="0 8 * * *", after="2026-03-27T08:00:00Z", count=2).get_json()
    assert body["fires"] == ["2026-03-28T08:00:00Z", "2026-03-29T08:00:00Z"]
    body = preview(client, schedule="0 8 * * *", after="2026-03-27T09:00:00+01:00", count=1).get_json()
    assert body["fires"] == ["2026-03-28T08:00:00Z"]  # the offset is honoured: 08:00Z is not after 08:00Z


def test_preview_defaults_to_utc_ten_fires_after_now(client: FlaskClient, clock: FakeClock) -> None:
    body = preview(client, schedule="@hourly").get_json()
    assert body["schedule"] == "@hourly" and body["timezone"] == "UTC"
    assert body["fires"] == [f"2026-03-26T{hour:02d}:00:00Z" for hour in range(11, 21)]


def test_preview_count_bounds(client: FlaskClient) -> None:
    one = preview(client, schedule="*/5 * * * * *", after="2026-01-01T00:00:00Z", count=1).get_json()
    assert one["fires"] == ["2026-01-01T00:00:05Z"]  # six fields: seconds first
    hundred = preview(client, schedule="* * * * *", after="2026-01-01T00:00:00Z", count=100).get_json()
    assert len(hundred["fires"]) == 100 and hundred["fires"][-1] == "2026-01-01T01:40:00Z"
    for count in (0, 101, -1):
        body = assert_error(preview(client, schedule="* * * * *", count=count), 422, "validation_error")
        assert "count" in body["error"]["details"]


def test_preview_rejects_what_create_rejects(client: FlaskClient) -> None:
    assert "schedule" in assert_error(preview(client, schedule="0 0 31 2 *"), 422)["error"]["details"]
    assert "timezone" in assert_error(preview(client, schedule="* * * * *", timezone="Mars/Olympus"), 422)["error"]["details"]
    assert "after" in assert_error(preview(client, schedule="* * * * *", after="2026-01-01T00:00:00"), 422)["error"]["details"]
    assert "after" in assert_error(preview(client, schedule="* * * * *", after="yesterday"), 422)["error"]["details"]
    assert "extra" in assert_error(preview(client, schedule="* * * * *", extra=1), 422)["error"]["details"]


# -- OpenAPI, health ----------------------------------------------------------------


def test_openapi_document_is_served(client: FlaskClient, base: str) -> None:
    response = client.get(f"{base}/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, methods in {
        "/api/v1/cron/jobs": {"get", "post"},
        "/api/v1/cron/jobs/{job_id}": {"get", "put", "delete"},
        "/api/v1/cron/jobs/{job_id}/trigger": {"post"},
        "/api/v1/cron/handlers": {"get"},
        "/api/v1/cron/scheduler": {"get"},
        "/api/v1/cron/schedules/preview": {"post"},
    }.items():
        assert methods <= set(paths[path]), path
    assert doc["components"]["schemas"]["JobCreate"]["additionalProperties"] is False
    assert "security" not in paths["/api/v1/cron/jobs"]["post"]  # no API_TOKEN configured


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"mongodb": "ok", "rabbitmq": "ok"}}


def test_readyz_is_503_when_rabbitmq_is_unreachable(settings: Settings, store: MongoStore) -> None:
    closed = f"amqp://guest:secret@127.0.0.1:{services.free_port()}/%2F"
    app = create_app(settings.replace(rabbitmq_url=closed))
    try:
        response = app.test_client().get("/readyz")
    finally:
        close_app(app)
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and body["checks"]["mongodb"] == "ok"
    assert "unreachable" in body["checks"]["rabbitmq"] and "secret" not in body["checks"]["rabbitmq"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_refuse_other_methods(client: FlaskClient, path: str) -> None:
    assert_error(client.post(path), 405, "method_not_allowed")
