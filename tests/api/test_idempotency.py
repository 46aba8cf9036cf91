"""Idempotency-Key on POST /jobs and POST /jobs/:id/trigger (in process; two API
replicas racing one key: ``tests/api/test_replicas.py``)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.errors import StoreUnavailable
from cronhive.idempotency import CLAIM_TIMEOUT, RETENTION, IdempotencyRecord, key_id
from cronhive.settings import ApiToken, Settings
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, DOUBLED, FakeClock, assert_error, create, job_body

KEY = {"Idempotency-Key": "create-nightly-1"}


def test_a_repeated_create_answers_the_first_response_and_creates_once(client: FlaskClient, store: MongoStore,
                                                                       clock: FakeClock, base: str) -> None:
    first = client.post(f"{base}/jobs", json=job_body(), headers=KEY)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    clock.advance(minutes=5)
    again = client.post(f"{base}/jobs", json=job_body(), headers=KEY)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert (again.headers["Location"], again.headers["ETag"]) == (first.headers["Location"], first.headers["ETag"])
    assert again.mimetype == "application/json"
    assert store.jobs.count_documents({}) == 1  # no job_nightly_export_2
    without_key = client.post(f"{base}/jobs", json=job_body())
    assert without_key.status_code == 201 and store.jobs.count_documents({}) == 2


def test_the_same_key_with_another_body_is_422_reused(client: FlaskClient, store: MongoStore) -> None:
    client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY)
    reused = client.post(f"{CANONICAL}/jobs", json=job_body(name="Another"), headers=KEY)
    assert_error(reused, 422, "idempotency_key_reused")
    # the same JSON written differently is the same body
    spaced = client.post(f"{CANONICAL}/jobs", data='{ "handler":"noop", "schedule":"0 3 * * *", "name":"Nightly export" }',
                         content_type="application/json", headers=KEY)
    assert spaced.status_code == 201 and spaced.headers["Idempotent-Replayed"] == "true"
    assert store.jobs.count_documents({}) == 1


def test_both_path_forms_are_one_endpoint_and_other_endpoints_or_jobs_are_other_requests(
        client: FlaskClient, store: MongoStore) -> None:
    create(client, job_id="a")
    create(client, job_id="b")
    key = {"Idempotency-Key": "trigger-1"}
    first = client.post(f"{CANONICAL}/jobs/a/trigger", headers=key)
    assert first.status_code == 202
    doubled = client.post(f"{DOUBLED}/jobs/a/trigger", headers=key)
    assert doubled.headers["Idempotent-Replayed"] == "true" and doubled.get_json() == first.get_json()
    assert_error(client.post(f"{CANONICAL}/jobs/b/trigger", headers=key), 422, "idempotency_key_reused")
    assert store.runs.count_documents({}) == 1
    created = client.post(f"{CANONICAL}/jobs", json=job_body(), headers=key)  # another endpoint, the same key
    assert created.status_code == 201 and "Idempotent-Replayed" not in created.headers


def test_a_repeat_while_the_first_is_in_progress_is_409(client: FlaskClient, store: MongoStore, clock: FakeClock) -> None:
    from cronhive.idempotency import fingerprint

    now = clock.now()
    stamp = fingerprint({}, b'{"name": "Nightly export", "schedule": "0 3 * * *", "handler": "noop"}')
    store.claim_idempotency_key(IdempotencyRecord(key_id("anonymous", "POST create_job", "k"), "anonymous",
                                                  "POST create_job", stamp, "someone-else", now + CLAIM_TIMEOUT,
                                                  now + RETENTION), now)
    busy = client.post(f"{CANONICAL}/jobs", json=job_body(), headers={"Idempotency-Key": "k"})
    assert_error(busy, 409, "idempotency_key_in_progress")
    assert busy.headers["Retry-After"] == "1" and store.jobs.count_documents({}) == 0
    clock.advance(seconds=CLAIM_TIMEOUT.total_seconds() + 1)  # its process died: the claim is taken over
    taken = client.post(f"{CANONICAL}/jobs", json=job_body(), headers={"Idempotency-Key": "k"})
    assert taken.status_code == 201 and "Idempotent-Replayed" not in taken.headers
    assert store.jobs.count_documents({}) == 1


def test_a_failure_releases_the_key_and_a_4xx_is_kept(app: Flask, client: FlaskClient, store: MongoStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = store.create_job

    def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("MongoDB is unreachable")

    services = app.extensions["cronhive"]
    monkeypatch.setattr(services.store, "create_job", unavailable)
    assert_error(client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY), 503)
    monkeypatch.setattr(services.store, "create_job", real)
    retried = client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY)
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers

    bad = {"Idempotency-Key": "bad-body"}
    first = client.post(f"{CANONICAL}/jobs", json=job_body(schedule="not cron"), headers=bad)
    assert_error(first, 422, "validation_error")
    replayed = client.post(f"{CANONICAL}/jobs", json=job_body(schedule="not cron"), headers=bad)
    assert replayed.status_code == 422 and replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.get_json() == first.get_json()


def test_keys_expire_after_a_day(client: FlaskClient, store: MongoStore, clock: FakeClock) -> None:
    client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY)
    index = store.idempotency_keys.index_information()["expiry"]
    assert index["key"] == [("expires_at", 1)] and index["expireAfterSeconds"] == 0
    clock.advance(hours=23)
    assert client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY).headers.get("Idempotent-Replayed") == "true"
    clock.advance(hours=1, seconds=1)
    fresh = client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY)
    assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh.headers
    assert store.jobs.count_documents({}) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "ünïcode"])
def test_a_malformed_key_is_400(client: FlaskClient, store: MongoStore, key: str) -> None:
    response = client.post(f"{CANONICAL}/jobs", json=job_body(), headers={"Idempotency-Key": key.encode().decode("latin-1")})
    assert_error(response, 400, "invalid_idempotency_key")
    assert store.jobs.count_documents({}) == 0


def test_keys_are_per_actor(settings: Settings, store: MongoStore) -> None:
    app = create_app(settings.replace(api_tokens=(ApiToken("ci", "ci-secret"), ApiToken("ops", "ops-secret"))))
    try:
        client = app.test_client()
        for secret in ("ci-secret", "ops-secret", "ci-secret"):
            client.post(f"{CANONICAL}/jobs", json=job_body(), headers={**KEY, "Authorization": f"Bearer {secret}"})
        assert store.jobs.count_documents({}) == 2  # ci's and ops's keys are theirs alone
        assert {r.actor for job in store.jobs.find() for r in store.revision_history(job["_id"])} == {"ci", "ops"}
    finally:
        close_app(app)


def test_a_request_whose_process_was_killed_is_retried_after_its_claim(settings: Settings, client: FlaskClient,
                                                                       store: MongoStore, clock: FakeClock) -> None:
    import subprocess
    import sys
    from datetime import UTC, datetime

    script = """
import os, signal, sys
from cronhive.api.app import create_app
from cronhive.settings import Settings
from cronhive.store import MongoStore
MongoStore.create_job = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
app = create_app(Settings.from_env({"MONGODB_URI": sys.argv[1], "MONGODB_DB": sys.argv[2], "RABBITMQ_URL": sys.argv[3]}))
app.test_client().post("/api/v1/cron/jobs", json={"name": "Nightly export", "schedule": "0 3 * * *", "handler": "noop"},
                       headers={"Idempotency-Key": "create-nightly-1"})
"""
    done = subprocess.run([sys.executable, "-c", script, settings.mongodb_uri, settings.mongodb_db,
                           settings.rabbitmq_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    assert store.idempotency_keys.count_documents({"response": None}) == 1  # claimed, never answered
    clock.set(datetime.now(UTC))
    assert_error(client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY), 409, "idempotency_key_in_progress")
    clock.advance(seconds=CLAIM_TIMEOUT.total_seconds() + 1)
    retried = client.post(f"{CANONICAL}/jobs", json=job_body(), headers=KEY)
    assert retried.status_code == 201 and store.jobs.count_documents({}) == 1
