"""A failed run waiting out its retry backoff, as the API, the dashboard and the CLI's
JSON show it (issue 14, item 6), against a real worker process: the job's
``last_run_*`` is the failed attempt, a trigger's 409 says a retry is due (not that
the job is running), ``GET /runs/:id`` shows ``retry_at`` and every attempt, and the
backoff is Dramatiq's (``base × 2^(n-1)``, jittered up to twice that)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.worker.cluster import WorkerCluster, wait_for

LEASE_S = 3
BACKOFF_MS = 2500
API = "/api/v1/cron"

pytestmark = pytest.mark.slow


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def stack(mongodb_uri: str, rabbitmq_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, MongoStore]]:
    tag = uuid.uuid4().hex[:10]
    base_env = {key: value for key, value in os.environ.items()
                if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    env = {**base_env, "MONGODB_URI": mongodb_uri, "MONGODB_DB": f"cronhive_retry_{tag}",
           "RABBITMQ_URL": rabbitmq_url, "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "JOB_LEASE_S": str(LEASE_S),
           "RETRY_BACKOFF_MS": str(BACKOFF_MS), "HANDLER_MODULES": "tests.worker.handlers_for_tests",
           "METRICS_PORT": "0", "LOG_LEVEL": "INFO"}
    settings = Settings.from_env(env)
    app = create_app(settings)
    app.testing = True
    store: MongoStore = app.extensions["cronhive"].store
    workers = WorkerCluster(env, tmp_path_factory.mktemp("workers"), 1)
    try:
        workers.start()
        yield app.test_client(), store
    finally:
        workers.stop()
        store.client.drop_database(settings.mongodb_db)
        close_app(app)
        services.delete_queues(rabbitmq_url, settings.runs_queue, f"{settings.runs_queue}.DQ",
                               f"{settings.runs_queue}.XQ")


def test_a_retry_waiting_out_its_backoff_is_shown_as_what_it_is(
        stack: tuple[FlaskClient, MongoStore], tmp_path: Path) -> None:
    client, _ = stack
    events = tmp_path / "events"
    created = client.post(f"{API}/jobs", json={
        "job_id": "flaky", "name": "Flaky", "schedule": "0 0 1 1 *", "handler": "record", "max_retries": 1,
        "args": {"file": str(events), "seconds": 0.1, "fail_attempts": 1}})
    assert created.status_code == 201, created.get_data(as_text=True)
    run_id = client.post(f"{API}/jobs/flaky/trigger").get_json()["run_id"]

    waiting: dict[str, Any] = wait_for(
        lambda: (run := client.get(f"{API}/runs/{run_id}").get_json())["status"] == "queued"
        and run["attempt"] == 1 and run["retry_at"] and run, 20, "the failed attempt's retry to wait")
    (first,) = waiting["attempts"]
    assert first["status"] == "failed" and first["error"]["type"] == "FlakyFailure"
    assert waiting["error"]["type"] == "FlakyFailure"
    delay_ms = (instant(waiting["retry_at"]) - instant(first["finished_at"])).total_seconds() * 1000
    assert BACKOFF_MS - 1000 <= delay_ms <= 2 * BACKOFF_MS + 1000, delay_ms  # whole seconds shown

    job = wait_for(lambda: (shown := client.get(f"{API}/jobs/flaky").get_json())["last_run_id"] == run_id and shown,
                   5, "the failed attempt on the job (written right after the run's)")
    assert (job["last_run_id"], job["last_run_status"]) == (run_id, "failed")
    assert job["last_run_duration_ms"] == first["duration_ms"]
    assert job["lock_acquired"] is True  # the retry keeps the lease: a trigger would overlap it

    refused = client.post(f"{API}/jobs/flaky/trigger")
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert "is running" not in error["message"]
    assert f"a retry of run {run_id} (attempt 2) is due at {waiting['retry_at']}" in error["message"], error
    assert error["details"] == {"job_id": "flaky", "run_id": run_id, "retry_at": waiting["retry_at"]}

    page = client.get("/ui/jobs/flaky").get_data(as_text=True)
    assert 'id="retry-due"' in page and "retry waiting" in page
    assert 'id="retry-at"' in client.get(f"/ui/runs/{run_id}").get_data(as_text=True)

    done = wait_for(lambda: (run := client.get(f"{API}/runs/{run_id}").get_json())["status"] == "succeeded" and run,
                    2 * BACKOFF_MS / 1000 + 15, "the retry to succeed")
    assert done["attempt"] == 2 and done["retry_at"] is None and done["error"] is None
    assert [(a["attempt"], a["status"]) for a in done["attempts"]] == [(1, "failed"), (2, "succeeded")]
    job = wait_for(lambda: (shown := client.get(f"{API}/jobs/flaky").get_json())["last_run_status"] == "succeeded"
                   and shown, 5, "the final outcome on the job")
    assert (job["last_run_status"], job["lock_acquired"]) == ("succeeded", False)
    assert client.post(f"{API}/jobs/flaky/trigger").status_code == 202


def test_a_trigger_refused_by_a_running_run_names_it(stack: tuple[FlaskClient, MongoStore], tmp_path: Path) -> None:
    client, _ = stack
    assert client.post(f"{API}/jobs", json={"job_id": "slow", "name": "Slow", "schedule": "0 0 1 1 *",
                                            "handler": "sleep", "args": {"seconds": 2}}).status_code == 201
    run_id = client.post(f"{API}/jobs/slow/trigger").get_json()["run_id"]
    wait_for(lambda: client.get(f"{API}/runs/{run_id}").get_json()["status"] == "running", 15, "the run to start")
    error = client.post(f"{API}/jobs/slow/trigger").get_json()["error"]
    assert error["message"] == f"job 'slow' is running: run {run_id} holds its lease"
    assert error["details"] == {"job_id": "slow", "run_id": run_id}
