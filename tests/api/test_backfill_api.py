"""``POST /jobs/:id/backfill`` against the real store and RabbitMQ: the exact slots of a
range (DST in Europe/Berlin included), what ``reprocess`` chooses, idempotence, the
1,000-slot cap, disabled jobs, bad input, a failed publish (503, nothing lost), and
``GET /jobs/:id/runs?trigger=backfill``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.broker import RunPublisher
from cronhive.domain import new_run
from cronhive.enums import RunStatus, Trigger
from cronhive.errors import BrokerUnavailable
from cronhive.settings import Settings
from cronhive.slots import slot_run_id
from cronhive.store import MongoStore
from tests import services
from tests.api.conftest import CANONICAL, assert_error, create


def z(*args: int) -> str:
    return datetime(*args, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backfill(client: FlaskClient, base: str, job_id: str, **body: Any) -> Any:
    return client.post(f"{base}/jobs/{job_id}/backfill", json=body)


def backfill_runs(store: MongoStore, job_id: str) -> list[dict[str, Any]]:
    return list(store.runs.find({"job_id": job_id, "trigger": "backfill"}).sort("scheduled_for", 1))


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(body) for body in services.get_messages(settings.rabbitmq_url, settings.runs_queue)]


def test_a_backfill_across_the_spring_dst_change_runs_the_exact_slots(
        client: FlaskClient, base: str, store: MongoStore, settings: Settings) -> None:
    # 02:30 Berlin does not exist on 2026-03-29 (02:00 CET → 03:00 CEST): that day's slot is 03:00 CEST
    create(client, base, job_id="nightly", schedule="30 2 * * *", timezone="Europe/Berlin")
    response = backfill(client, base, "nightly", start=z(2026, 3, 27), end=z(2026, 3, 31))
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"job_id", "backfill_id", "slots", "created"}
    assert body["job_id"] == "nightly" and body["slots"] == 4 and body["created"] == 4
    assert body["backfill_id"].startswith("bf_")
    runs = backfill_runs(store, "nightly")
    assert [run["scheduled_for"] for run in runs] == [
        datetime(2026, 3, 27, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),   # 03:00 CEST: 02:30 was skipped by the clock change
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]
    assert {run["status"] for run in runs} == {"queued"}  # confirmed by RabbitMQ
    assert all(run["queued_at"] is not None and run["lease_token"] is None for run in runs)
    assert [run["_id"] for run in runs] == [slot_run_id("nightly", run["scheduled_for"], Trigger.BACKFILL)
                                           for run in runs]
    # published oldest first
    assert [message["args"][0] for message in queued_messages(settings)] == [run["_id"] for run in runs]


def test_a_backfill_across_the_autumn_dst_change_runs_both_two_oclocks_and_end_is_exclusive(
        client: FlaskClient, base: str, store: MongoStore) -> None:
    # 2026-10-25: 02:00 CEST (00:00Z) then 02:00 CET (01:00Z) — an hourly job fires at both
    create(client, base, job_id="hourly", schedule="0 * * * *", timezone="Europe/Berlin")
    response = backfill(client, base, "hourly", start="2026-10-25T01:30:00+02:00", end=z(2026, 10, 25, 3))
    assert response.status_code == 202
    assert response.get_json()["slots"] == 3
    assert [run["scheduled_for"] for run in backfill_runs(store, "hourly")] == [
        datetime(2026, 10, 25, 0, tzinfo=UTC),  # 02:00 CEST
        datetime(2026, 10, 25, 1, tzinfo=UTC),  # 02:00 CET, the same wall time an hour later
        datetime(2026, 10, 25, 2, tzinfo=UTC),  # 03:00 CET; 03:00Z itself is the exclusive end
    ]


def test_the_same_backfill_again_creates_only_what_is_missing(
        client: FlaskClient, base: str, store: MongoStore) -> None:
    create(client, base, job_id="daily", schedule="0 6 * * *")
    first = backfill(client, base, "daily", start=z(2026, 1, 1), end=z(2026, 1, 11)).get_json()
    assert (first["slots"], first["created"]) == (10, 10)
    again = backfill(client, base, "daily", start=z(2026, 1, 1), end=z(2026, 1, 11)).get_json()
    assert (again["slots"], again["created"]) == (10, 0) and again["backfill_id"] == first["backfill_id"]
    wider = backfill(client, base, "daily", start=z(2025, 12, 30), end=z(2026, 1, 13)).get_json()
    assert (wider["slots"], wider["created"]) == (14, 4) and wider["backfill_id"] != first["backfill_id"]
    assert len(backfill_runs(store, "daily")) == 14


def _slot_runs(store: MongoStore, job_id: str, statuses: dict[datetime, RunStatus]) -> None:
    job = store.get_job(job_id)
    for slot, status in statuses.items():
        store.insert_run(new_run(job, slot_run_id(job_id, slot), Trigger.SCHEDULE, slot, slot, None, status))


@pytest.mark.parametrize("reprocess,expected_days", [
    (None, [1, 3, 4, 5]), ("missing", [1, 3, 4, 5]), ("failed", [3, 4]), ("all", [1, 2, 3, 4, 5]),
])
def test_reprocess_chooses_the_slots(client: FlaskClient, store: MongoStore, reprocess: str | None,
                                     expected_days: list[int]) -> None:
    create(client, job_id="pick", schedule="0 6 * * *")
    day = lambda d: datetime(2026, 2, d, 6, tzinfo=UTC)  # noqa: E731
    # day 1: no run; 2: succeeded; 3: failed; 4: timed out; 5: skipped
    _slot_runs(store, "pick", {day(2): RunStatus.SUCCEEDED, day(3): RunStatus.FAILED,
                               day(4): RunStatus.TIMED_OUT, day(5): RunStatus.SKIPPED})
    body = {"start": z(2026, 2, 1), "end": z(2026, 2, 6)} | ({"reprocess": reprocess} if reprocess else {})
    response = client.post(f"{CANONICAL}/jobs/pick/backfill", json=body)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["slots"] == len(expected_days)
    assert [run["scheduled_for"] for run in backfill_runs(store, "pick")] == [day(d) for d in expected_days]


def test_a_slot_whose_backfill_run_succeeded_is_not_missing_any_more(client: FlaskClient, store: MongoStore) -> None:
    create(client, job_id="done", schedule="0 6 * * *")
    backfill(client, CANONICAL, "done", start=z(2026, 2, 1), end=z(2026, 2, 3))
    store.runs.update_many({"job_id": "done"}, {"$set": {"status": "succeeded"}})
    body = backfill(client, CANONICAL, "done", start=z(2026, 2, 1), end=z(2026, 2, 3)).get_json()
    assert (body["slots"], body["created"]) == (0, 0)


def test_a_disabled_job_can_be_backfilled(client: FlaskClient, store: MongoStore) -> None:
    create(client, job_id="off", schedule="0 6 * * *", enabled=False)
    response = backfill(client, CANONICAL, "off", start=z(2026, 2, 1), end=z(2026, 2, 3))
    assert response.status_code == 202 and response.get_json()["created"] == 2
    assert store.get_job("off").enabled is False


def test_at_most_1000_slots(client: FlaskClient, store: MongoStore) -> None:
    create(client, job_id="minutely", schedule="* * * * *")
    ok = backfill(client, CANONICAL, "minutely", start=z(2026, 2, 1), end=z(2026, 2, 1, 16, 40))  # 1,000 minutes
    assert ok.status_code == 202 and ok.get_json()["created"] == 1000
    too_many = backfill(client, CANONICAL, "minutely", start=z(2026, 2, 1), end=z(2026, 2, 1, 16, 41))
    error = assert_error(too_many, 422, "validation_error")["error"]
    assert "end" in error["details"] and "1000" in error["message"]
    assert len(backfill_runs(store, "minutely")) == 1000  # the refused request created nothing


@pytest.mark.parametrize("body,field", [
    ({"end": "2026-02-02T00:00:00Z"}, "start"),
    ({"start": "2026-02-01T00:00:00Z"}, "end"),
    ({"start": "2026-02-02T00:00:00Z", "end": "2026-02-01T00:00:00Z"}, "end"),
    ({"start": "2026-02-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}, "end"),
    ({"start": "2026-02-01T00:00:00", "end": "2026-02-02T00:00:00Z"}, "start"),
    ({"start": "yesterday", "end": "2026-02-02T00:00:00Z"}, "start"),
    ({"start": 1, "end": "2026-02-02T00:00:00Z"}, "start"),
    ({"start": "2026-02-01T00:00:00Z", "end": "2026-02-02T00:00:00Z", "reprocess": "some"}, "reprocess"),
    ({"start": "2026-02-01T00:00:00Z", "end": "2026-02-02T00:00:00Z", "extra": 1}, "extra"),
])
def test_bad_backfill_input_is_a_422_naming_the_field(client: FlaskClient, base: str, body: dict[str, Any],
                                                       field: str) -> None:
    create(client, base, job_id="bad")
    error = assert_error(client.post(f"{base}/jobs/bad/backfill", json=body), 422, "validation_error")["error"]
    assert field in error["details"], error


def test_backfill_of_an_unknown_job_is_a_404(client: FlaskClient, base: str) -> None:
    assert_error(backfill(client, base, "nope", start=z(2026, 2, 1), end=z(2026, 2, 2)), 404, "job_not_found")


def test_the_runs_of_one_trigger(client: FlaskClient, base: str) -> None:
    create(client, base, job_id="mixed", schedule="0 6 * * *")
    backfill(client, base, "mixed", start=z(2026, 2, 1), end=z(2026, 2, 4))
    client.post(f"{base}/jobs/mixed/trigger")
    all_runs = client.get(f"{base}/jobs/mixed/runs").get_json()
    assert all_runs["pagination"]["total"] == 4
    page = client.get(f"{base}/jobs/mixed/runs?trigger=backfill").get_json()
    assert page["pagination"]["total"] == 3 and {run["trigger"] for run in page["data"]} == {"backfill"}
    manual = client.get(f"{base}/jobs/mixed/runs?trigger=manual").get_json()
    assert [run["trigger"] for run in manual["data"]] == ["manual"]
    assert_error(client.get(f"{base}/jobs/mixed/runs?trigger=cron"), 400, "invalid_query")


class BreakingPublisher:
    """The real publisher, failing (as an unreachable RabbitMQ) after ``good`` publishes."""

    def __init__(self, real: RunPublisher, good: int) -> None:
        self.real = real
        self.url = real.url
        self.good = good

    def publish_run(self, run_id: str, job_id: str) -> None:
        if self.good <= 0:
            raise BrokerUnavailable("RabbitMQ is unreachable: test")
        self.good -= 1
        self.real.publish_run(run_id, job_id)

    def ping(self) -> None:
        self.real.ping()

    def close(self) -> None:
        return None


@pytest.fixture
def breaking_client(settings: Settings, store: MongoStore, publisher: RunPublisher) -> Iterator[FlaskClient]:
    app = create_app(settings, store=store, publisher=BreakingPublisher(publisher, good=2))  # type: ignore[arg-type]
    app.testing = True
    yield app.test_client()
    close_app(app)


def test_a_failed_publish_is_a_503_and_leaves_the_rest_pending(breaking_client: FlaskClient, store: MongoStore,
                                                               settings: Settings) -> None:
    create(breaking_client, job_id="flaky", schedule="0 6 * * *")
    response = backfill(breaking_client, CANONICAL, "flaky", start=z(2026, 2, 1), end=z(2026, 2, 6))
    assert_error(response, 503, "rabbitmq_unavailable")
    assert response.headers["Retry-After"]
    runs = backfill_runs(store, "flaky")
    assert [run["status"] for run in runs] == ["queued", "queued", "pending", "pending", "pending"]
    # the scheduler's backlog pass publishes the pending ones (tests/scheduler/test_backfill_backlog.py);
    # the same request again creates nothing more
    again = backfill(breaking_client, CANONICAL, "flaky", start=z(2026, 2, 1), end=z(2026, 2, 6))
    assert again.status_code == 202 and again.get_json()["created"] == 0
    assert len(queued_messages(settings)) == 2


def test_an_idempotency_key_replays_the_first_backfill_answer(client: FlaskClient, store: MongoStore) -> None:
    create(client, CANONICAL, job_id="keyed", schedule="30 2 * * *", timezone="Europe/Berlin")
    key = {"Idempotency-Key": "backfill-keyed-1"}
    body = {"start": z(2026, 3, 27), "end": z(2026, 3, 29)}
    first = client.post(f"{CANONICAL}/jobs/keyed/backfill", json=body, headers=key)
    assert first.status_code == 202 and first.get_json()["created"] == 2
    store.runs.delete_many({"job_id": "keyed"})  # were the request run again, it would create them anew
    again = client.post(f"{CANONICAL}/jobs/keyed/backfill", json=body, headers=key)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json() and backfill_runs(store, "keyed") == []
    reused = client.post(f"{CANONICAL}/jobs/keyed/backfill", json={**body, "reprocess": "all"}, headers=key)
    assert reused.status_code == 422 and reused.get_json()["error"]["code"] == "idempotency_key_reused"
