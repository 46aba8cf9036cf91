"""A run that ends while MongoDB is down keeps its outcome: a real worker process on its
own SecantusDB, the store SIGKILLed while the handler runs and started again (on the
same data) after the handler ended. The worker writes the outcome when MongoDB returns —
the run is ``succeeded`` with its real duration and the job's lease is free — instead of
the run staying ``running`` until its lease expires and the reaper records it
``abandoned`` — also when the outage outlasts the lease, and the reaper (in the same
worker process) is the first to find MongoDB back."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronhive.broker import RunPublisher
from cronhive.dispatch import trigger_job
from cronhive.domain import utcnow
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.worker.cluster import WorkerCluster, wait_for

#: long enough that the lease outlives the outage: only the outcome write is at stake
LEASE_S = 30
#: shorter than the outage: the lease expires while nobody can renew it
SHORT_LEASE_S = 3
HANDLER_S = 2.0

Setup = tuple[services.SecantusServer, Settings, WorkerCluster]

pytestmark = pytest.mark.slow


@pytest.fixture
def outage_setup(request: pytest.FixtureRequest, rabbitmq_url: str, tmp_path: Path) -> Iterator[Setup]:
    lease_s = getattr(request, "param", LEASE_S)
    server = services.SecantusServer(port=services.free_port(), data_dir=str(tmp_path / "mongodb")).start()
    tag = uuid.uuid4().hex[:10]
    env = {key: value for key, value in os.environ.items()
           if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    env.update({"MONGODB_URI": server.uri, "MONGODB_DB": "cronhive", "MONGODB_TIMEOUT_MS": "1000",
                "RABBITMQ_URL": rabbitmq_url, "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "JOB_LEASE_S": str(lease_s),
                "METRICS_PORT": "0", "LOG_LEVEL": "INFO"})
    settings = Settings.from_env(env)
    cluster = WorkerCluster(env, tmp_path, 1)
    try:
        yield server, settings, cluster
    finally:
        cluster.stop()
        server.cleanup()
        services.delete_queues(rabbitmq_url, settings.runs_queue, f"{settings.runs_queue}.DQ",
                               f"{settings.runs_queue}.XQ")


@pytest.mark.parametrize("outage_setup", [LEASE_S, SHORT_LEASE_S], indirect=True,
                         ids=["lease-outlives-outage", "lease-expires-in-outage"])
def test_an_outcome_written_while_mongodb_is_down_lands_when_it_returns(outage_setup: Setup) -> None:
    server, settings, cluster = outage_setup
    store = MongoStore.open(settings)
    publisher = RunPublisher.open(settings)
    try:
        store.ensure_indexes()
        store.create_job({"job_id": "slow", "name": "slow", "schedule": "0 0 1 1 *", "handler": "sleep",
                          "args": {"seconds": HANDLER_S}, "max_retries": 0, "enabled": False}, utcnow())
        cluster.start()
        run_id = trigger_job(store, publisher, "slow", utcnow(), settings.job_lease_s).run_id
        wait_for(lambda: store.runs.find_one({"_id": run_id})["status"] == "running", 20, "the run to start")
        server.kill()  # the handler goes on sleeping; its outcome write will find no MongoDB
        # down past the handler's end, and past a short lease: nobody could renew it
        time.sleep(max(HANDLER_S, SHORT_LEASE_S) + 3)
        server.start()
        services.wait_for_mongodb(server.uri, 30)
        run = wait_for(lambda: (doc := store.runs.find_one({"_id": run_id})) and doc["status"] != "running" and doc,
                       20, "the run's outcome")
        assert run["status"] == "succeeded", run
        assert run["duration_ms"] < (HANDLER_S + 1) * 1000  # the attempt's own end, not the outage's
        job = store.jobs.find_one({"_id": "slow"})
        assert job["last_run_id"] == run_id and job["last_run_status"] == "succeeded"
        assert not job.get("lease")  # released in the outcome's job write
        assert "outcomes are kept and written when it returns" in cluster.workers[0].log()
    finally:
        publisher.close()
        store.close()
