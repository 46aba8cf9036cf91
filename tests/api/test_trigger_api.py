"""POST /jobs/:id/trigger: a queued run in MongoDB, its message on RabbitMQ, the
job's lease reserved for it, and 409 while the lease is held (SPEC §3, §5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.broker import RUN_ACTOR
from cronhive.errors import StoreUnavailable
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.api.conftest import CANONICAL, FakeClock, assert_error, create


def messages(settings: Settings) -> list[dict[str, Any]]:
    """Take the messages on the test's runs queue, decoded (they are readable JSON)."""
    return [json.loads(body) for body in services.get_messages(settings.rabbitmq_url, settings.runs_queue)]


def trigger(client: FlaskClient, job_id: str, base: str = CANONICAL) -> Any:
    return client.post(f"{base}/jobs/{job_id}/trigger")


def test_trigger_queues_a_run_and_publishes_it(
    client: FlaskClient, clock: FakeClock, store: MongoStore, settings: Settings, base: str
) -> None:
    job = create(client, job_id="report")
    response = trigger(client, "report", base)
    assert response.status_code == 202
    body = response.get_json()
    assert body == {"job_id": "report", "triggered_at": "2026-03-26T10:00:00Z", "lock_acquired": True,
                    "run_id": body["run_id"]}
    run_id = body["run_id"]
    assert run_id.startswith("run_20260326_100000_")

    run = store.runs.find_one({"_id": run_id})
    assert run["status"] == "queued" and run["trigger"] == "manual" and run["job_id"] == "report"
    assert run["scheduled_for"] == clock.now() and run["queued_at"] == clock.now()
    assert run["attempt"] == 0 and run["worker"] is None

    doc = store.jobs.find_one({"_id": "report"})
    assert doc["lease"]["holder"] == f"run:{run_id}" and doc["lease"]["run_id"] == run_id
    assert doc["lease"]["token"] == run["lease_token"] == doc["lease_term"] == 1
    assert doc["last_triggered_at"] == clock.now()
    assert doc["due_at"] is not None and doc["due_at"] == store.jobs.find_one({"_id": "report"})["next_fire_at"]

    (message,) = messages(settings)
    assert message["actor_name"] == RUN_ACTOR == "execute_run"
    assert message["queue_name"] == settings.runs_queue
    assert message["args"] == [run_id]
    assert message["kwargs"] == {"job_id": "report"}

    shown = client.get(f"{base}/jobs/report").get_json()
    assert shown["lock_acquired"] is True
    assert shown["last_triggered_at"] == "2026-03-26T10:00:00Z"
    assert shown["next_trigger_at"] == job["next_trigger_at"]


def test_second_trigger_while_the_lease_is_held_is_409(
    client: FlaskClient, clock: FakeClock, store: MongoStore, settings: Settings, base: str
) -> None:
    create(client, job_id="report")
    first = trigger(client, "report", base).get_json()
    clock.advance(seconds=settings.job_lease_s - 1)
    refused = trigger(client, "report", base)
    body = assert_error(refused, 409, "lease_held")
    assert body["lock_acquired"] is False
    assert store.runs.count_documents({}) == 1
    assert [m["args"] for m in messages(settings)] == [[first["run_id"]]]
    assert store.jobs.find_one({"_id": "report"})["lease"]["run_id"] == first["run_id"]


def test_trigger_after_the_lease_expired_gets_a_new_token(
    client: FlaskClient, clock: FakeClock, store: MongoStore, settings: Settings
) -> None:
    create(client, job_id="report")
    trigger(client, "report")
    clock.advance(seconds=settings.job_lease_s)  # expires_at <= now: expired
    second = trigger(client, "report")
    assert second.status_code == 202 and second.get_json()["lock_acquired"] is True
    lease = store.jobs.find_one({"_id": "report"})["lease"]
    assert lease["run_id"] == second.get_json()["run_id"] and lease["token"] == 2
    assert len(messages(settings)) == 2


def test_a_disabled_job_can_be_triggered(client: FlaskClient, clock: FakeClock, store: MongoStore, settings: Settings) -> None:
    create(client, job_id="paused", enabled=False)
    response = trigger(client, "paused")
    assert response.status_code == 202 and response.get_json()["lock_acquired"] is True
    assert store.runs.find_one({"_id": response.get_json()["run_id"]})["status"] == "queued"
    job = client.get(f"{CANONICAL}/jobs/paused").get_json()
    assert job["status"] == "disabled" and job["next_trigger_at"] is None
    assert len(messages(settings)) == 1


def test_allow_policy_takes_no_lease_and_runs_overlap(
    client: FlaskClient, clock: FakeClock, store: MongoStore, settings: Settings
) -> None:
    create(client, job_id="parallel", overlap_policy="allow")
    bodies = [trigger(client, "parallel") for _ in range(3)]
    assert [b.status_code for b in bodies] == [202, 202, 202]
    assert [b.get_json()["lock_acquired"] for b in bodies] == [False, False, False]  # the truth: no lease
    run_ids = {b.get_json()["run_id"] for b in bodies}
    assert len(run_ids) == 3
    assert {run["_id"] for run in store.runs.find({"status": "queued"})} == run_ids
    assert store.jobs.find_one({"_id": "parallel"})["lease"] is None
    assert {m["args"][0] for m in messages(settings)} == run_ids


def test_buffer_one_lets_one_run_wait(client: FlaskClient, clock: FakeClock, store: MongoStore, settings: Settings) -> None:
    create(client, job_id="buffered", overlap_policy="buffer_one")
    first = trigger(client, "buffered").get_json()
    waiting = trigger(client, "buffered")
    assert waiting.status_code == 202 and waiting.get_json()["lock_acquired"] is False
    doc = store.jobs.find_one({"_id": "buffered"})
    assert doc["buffered_run_id"] == waiting.get_json()["run_id"]
    assert doc["lease"]["run_id"] == first["run_id"]
    body = assert_error(trigger(client, "buffered"), 409, "lease_held")
    assert body["lock_acquired"] is False
    assert store.runs.count_documents({}) == 2 and len(messages(settings)) == 2


def test_trigger_unknown_job_is_404(client: FlaskClient, base: str) -> None:
    assert_error(trigger(client, "ghost", base), 404, "job_not_found")


def test_trigger_ignores_a_body(client: FlaskClient, clock: FakeClock) -> None:
    create(client, job_id="report")
    response = client.post(f"{CANONICAL}/jobs/report/trigger", data="not json", content_type="text/plain")
    assert response.status_code == 202


def test_a_mongodb_failure_after_the_publish_still_answers_202(
    app: Flask, client: FlaskClient, clock: FakeClock, store: MongoStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RabbitMQ confirmed the run: it will execute, so the trigger succeeded even if
    marking it ``queued`` fails (answering 503 would invite a second trigger)."""
    create(client, job_id="report")
    app_store = app.extensions["cronhive"].store

    def unavailable(*args: Any) -> None:
        raise StoreUnavailable("MongoDB is unreachable")

    monkeypatch.setattr(app_store, "mark_run_queued", unavailable)
    response = trigger(client, "report")
    assert response.status_code == 202 and response.get_json()["lock_acquired"] is True
    run_id = response.get_json()["run_id"]
    assert store.runs.find_one({"_id": run_id})["status"] == "pending"  # re-published by the scheduler; run once by workers
    assert [m["args"] for m in messages(settings)] == [[run_id]]


def test_a_job_deleted_while_triggering_is_404_not_409(
    app: Flask, client: FlaskClient, clock: FakeClock, store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(client, job_id="doomed")
    app_store = app.extensions["cronhive"].store
    real_claim = app_store.claim_lease

    def delete_first(scope: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        store.jobs.delete_one({"_id": job_id})  # another replica deletes it between the read and the claim
        return real_claim(scope, job_id, *args, **kwargs)

    monkeypatch.setattr(app_store, "claim_lease", delete_first)
    assert_error(trigger(client, "doomed"), 404, "job_not_found")
    assert store.runs.count_documents({}) == 0
