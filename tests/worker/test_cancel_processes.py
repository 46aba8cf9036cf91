"""Cancel and backfill with two real worker processes (``python -m cronhive.worker``, two
threads each) on the real RabbitMQ and MongoDB-wire store, requests sent to the real
API app: a cancelled queued run never starts; a running ``sleep`` handler stops
within seconds, is recorded ``cancelled`` and frees the job lease; a backfill under
``forbid`` runs its slots one after another, oldest first, none skipped."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.domain import FINAL_RUN_STATUSES, utcnow
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.worker.cluster import WorkerCluster, wait_for
from tests.worker.handlers_for_tests import read_events

LEASE_S = 3
API = "/api/v1/cron"

pytestmark = pytest.mark.slow


@dataclass
class System:
    settings: Settings
    store: MongoStore
    client: FlaskClient
    cluster: WorkerCluster

    def job(self, job_id: str, **fields: Any) -> None:
        body = {"job_id": job_id, "name": job_id, "schedule": "0 6 * * *", "handler": "noop", "enabled": False,
                **fields}
        response = self.client.post(f"{API}/jobs", json=body)
        assert response.status_code == 201, response.get_data(as_text=True)

    def trigger(self, job_id: str) -> str:
        response = self.client.post(f"{API}/jobs/{job_id}/trigger")
        assert response.status_code == 202, response.get_data(as_text=True)
        return str(response.get_json()["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return self.client.get(f"{API}/runs/{run_id}").get_json()

    def wait_status(self, run_id: str, statuses: tuple[str, ...] | frozenset[str], timeout_s: float) -> dict[str, Any]:
        return wait_for(lambda: (run := self.run(run_id))["status"] in statuses and run, timeout_s,
                        f"run {run_id} to be {statuses}")


@pytest.fixture(scope="module")
def system(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tag = uuid.uuid4().hex[:10]
    base_env = {key: value for key, value in os.environ.items()
                if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    env = {
        **base_env,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"cronhive_cancel_{tag}",
        "MONGODB_TIMEOUT_MS": "2000",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "JOB_LEASE_S": str(LEASE_S),
        "HANDLER_MODULES": "tests.worker.handlers_for_tests",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    settings = Settings.from_env(env)
    store = MongoStore.open(settings)
    store.ensure_indexes()
    app = create_app(settings)
    app.testing = True
    cluster = WorkerCluster(env, tmp_path_factory.mktemp("cancel-workers"), 2)
    try:
        cluster.start()
        yield System(settings, store, app.test_client(), cluster)
    finally:
        cluster.stop()
        close_app(app)
        store.client.drop_database(settings.mongodb_db)
        store.close()
        queue = settings.runs_queue
        services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")


def test_a_running_sleep_handler_stops_within_seconds_and_frees_the_lease(system: System) -> None:
    system.job("long", handler="sleep", args={"seconds": 60}, max_retries=2)
    run_id = system.trigger("long")
    system.wait_status(run_id, ("running",), 15)
    time.sleep(0.5)  # well inside the handler

    asked_at = time.monotonic()
    response = system.client.post(f"{API}/runs/{run_id}/cancel")
    assert response.status_code == 202 and response.get_json()["cancel_requested"] is True
    run = system.wait_status(run_id, FINAL_RUN_STATUSES, 15)
    stopped_s = time.monotonic() - asked_at
    assert run["status"] == "cancelled" and run["attempt"] == 1, run  # recorded, not retried
    assert run["error"]["type"] == "cancelled"
    assert stopped_s < 4, stopped_s  # the keeper looks every second
    # the run's outcome is written first, the job's (its lease released with it) right after
    job = wait_for(lambda: (doc := system.store.jobs.find_one({"_id": "long"})) and doc["lease"] is None and doc,
                   5, "the job's lease released")
    assert job["last_run_status"] == "cancelled"
    time.sleep(1)
    assert system.run(run_id)["attempt"] == 1  # no retry started afterwards
    assert system.client.post(f"{API}/jobs/long/trigger").status_code == 202  # the lease is free
    print(f"cancelled a running sleep handler in {stopped_s:.2f} s")


def test_a_cancelled_queued_run_never_starts(system: System, tmp_path: Path) -> None:
    events = tmp_path / "events"
    system.job("queue", handler="record", args={"file": str(events), "seconds": 30})
    blocker = system.trigger("queue")
    system.wait_status(blocker, ("running",), 15)
    response = system.client.post(f"{API}/jobs/queue/backfill",
                                  json={"start": "2026-02-01T00:00:00Z", "end": "2026-02-03T00:00:00Z"})
    assert response.status_code == 202 and response.get_json()["created"] == 2
    first, second = sorted(system.client.get(f"{API}/jobs/queue/runs?trigger=backfill").get_json()["data"],
                           key=lambda run: run["scheduled_for"])
    time.sleep(1)  # both delivered: they wait behind the blocker's lease
    assert system.run(first["run_id"])["status"] == "queued"
    # the runs still waiting start with the job as it is then: the second one ends quickly
    # (changed before the blocker ends, which lets the second start at once)
    system.store.update_job("queue", {"args": {"file": str(events), "seconds": 0.2}}, utcnow())

    cancelled = system.client.post(f"{API}/runs/{first['run_id']}/cancel").get_json()
    assert cancelled["status"] == "cancelled"
    system.client.post(f"{API}/runs/{blocker}/cancel")
    assert system.wait_status(blocker, FINAL_RUN_STATUSES, 15)["status"] == "cancelled"

    assert system.wait_status(second["run_id"], FINAL_RUN_STATUSES, 20)["status"] == "succeeded"
    time.sleep(1)
    started = {event["run_id"] for event in read_events(str(events)) if event["event"] == "start"}
    assert first["run_id"] not in started and {blocker, second["run_id"]} <= started
    final = system.run(first["run_id"])
    assert final["status"] == "cancelled" and final["attempt"] == 0 and final["started_at"] is None


def test_a_backfill_under_forbid_runs_every_slot_one_after_another_oldest_first(system: System,
                                                                                tmp_path: Path) -> None:
    events = tmp_path / "events"
    system.job("bf", handler="record", args={"file": str(events), "seconds": 0.3}, overlap_policy="forbid")
    response = system.client.post(f"{API}/jobs/bf/backfill",
                                  json={"start": "2026-02-01T00:00:00Z", "end": "2026-02-07T00:00:00Z"})
    assert response.status_code == 202 and response.get_json()["created"] == 6
    runs = sorted(system.client.get(f"{API}/jobs/bf/runs?trigger=backfill").get_json()["data"],
                  key=lambda run: run["scheduled_for"])
    for run in runs:
        assert system.wait_status(run["run_id"], FINAL_RUN_STATUSES, 40)["status"] == "succeeded"
    recorded = [event for event in read_events(str(events)) if event["event"] in ("start", "end")]
    # strictly one after another (start, end, start, end ...), in slot order
    assert [(event["run_id"], event["event"]) for event in recorded] == [
        (run["run_id"], event) for run in runs for event in ("start", "end")]
    again = system.client.post(f"{API}/jobs/bf/backfill",
                               json={"start": "2026-02-01T00:00:00Z", "end": "2026-02-07T00:00:00Z"}).get_json()
    assert (again["slots"], again["created"]) == (0, 0)  # every slot succeeded: nothing missing
