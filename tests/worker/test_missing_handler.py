"""A job whose handler is missing on the workers (issue 14, item 1), against two real
worker processes of which only worker 0 has the handler ``rolling_only``:

* registered on no live worker: the run is recorded ``failed`` (``handler_not_found``)
  at once — no attempt, no lease held for a lease's length, no ``abandoned`` — and the
  job is disabled with that reason;
* registered on another live worker (a rolling deploy): the worker lacking it hands the
  message back and a worker that has it runs it; the job stays enabled;
* a job document that is not a valid job reaching a worker: ``failed``
  (``invalid_job``), the job disabled, the handler never called.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cronhive.broker import RunPublisher
from cronhive.dispatch import trigger_job
from cronhive.domain import FINAL_RUN_STATUSES, new_run, new_run_id, utcnow
from cronhive.enums import Trigger
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.worker.cluster import WorkerCluster, wait_for

LEASE_S = 3

pytestmark = pytest.mark.slow


@dataclass
class Pair:
    settings: Settings
    store: MongoStore
    publisher: RunPublisher
    cluster: WorkerCluster

    def job(self, job_id: str, **fields: Any) -> None:
        body = {"job_id": job_id, "name": job_id, "schedule": "0 0 1 1 *", "handler": "noop", "enabled": True,
                **fields}
        self.store.create_job(body, utcnow())

    def trigger(self, job_id: str) -> str:
        return trigger_job(self.store, self.publisher, job_id, utcnow(), LEASE_S).run_id

    def wait_final(self, run_id: str, timeout_s: float = 20) -> dict[str, Any]:
        return wait_for(lambda: (run := self.store.runs.find_one({"_id": run_id}))["status"] in FINAL_RUN_STATUSES
                        and run, timeout_s, f"run {run_id} to end")


@pytest.fixture(scope="module")
def pair(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tag = uuid.uuid4().hex[:10]
    base_env = {key: value for key, value in os.environ.items()
                if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    env = {**base_env, "MONGODB_URI": mongodb_uri, "MONGODB_DB": f"cronhive_handlers_{tag}",
           "RABBITMQ_URL": rabbitmq_url, "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "JOB_LEASE_S": str(LEASE_S),
           "HANDLER_MODULES": "tests.worker.handlers_for_tests", "METRICS_PORT": "0", "LOG_LEVEL": "INFO"}
    settings = Settings.from_env(env)
    store = MongoStore.open(settings)
    store.ensure_indexes()
    publisher = RunPublisher.open(settings)
    cluster = WorkerCluster(env, tmp_path_factory.mktemp("workers"), 2, per_worker={
        0: {"HANDLER_MODULES": "tests.worker.handlers_for_tests,tests.worker.handlers_rolling"}})
    try:
        cluster.start()
        # both heartbeats written: the rule reads them
        wait_for(lambda: store.db["workers"].count_documents({"expires_at": {"$gt": utcnow()}}) == 2, 30,
                 "two worker heartbeats")
        yield Pair(settings, store, publisher, cluster)
    finally:
        cluster.stop()
        publisher.close()
        store.client.drop_database(settings.mongodb_db)
        store.close()
        services.delete_queues(rabbitmq_url, settings.runs_queue, f"{settings.runs_queue}.DQ",
                               f"{settings.runs_queue}.XQ")


def test_a_handler_no_live_worker_has_fails_the_run_at_once_and_disables_the_job(pair: Pair) -> None:
    pair.job("ghostly", handler="ghost")  # the store takes any handler; the API would refuse it
    started = time.monotonic()
    run_id = pair.trigger("ghostly")
    run = pair.wait_final(run_id, timeout_s=LEASE_S)  # at once: not a lease later
    assert time.monotonic() - started < LEASE_S
    assert run["status"] == "failed" and run["attempt"] == 0 and run["started_at"] is None, run
    assert run["error"]["type"] == "handler_not_found"
    assert "'ghost'" in run["error"]["message"] and "any live worker" in run["error"]["message"]
    job = wait_for(lambda: (doc := pair.store.jobs.find_one({"_id": "ghostly"}))["enabled"] is False and doc, 5,
                   "the job disabled")
    assert job["disabled_reason"] == run["error"]["message"] and job["due_at"] is None
    assert job["last_run_id"] == run_id and job["last_run_status"] == "failed"
    assert job["lease"] is None  # the reservation was released, not left to expire
    logs = "".join(pair.cluster.logs().values())
    assert logs.count("run failed without starting: handler_not_found") == 1
    assert "abandoned" not in logs


def test_a_handler_only_some_workers_have_runs_on_those_and_the_job_stays_enabled(pair: Pair) -> None:
    pair.job("rolling", handler="rolling_only", overlap_policy="allow")
    run_ids = [pair.trigger("rolling") for _ in range(6)]
    has_it = pair.cluster.workers[0].pid
    for run_id in run_ids:
        run = pair.wait_final(run_id)
        assert run["status"] == "succeeded" and run["attempt"] == 1, run
        worker_pid = int(run["worker"].rsplit(":", 1)[1])
        assert os.getpgid(worker_pid) == has_it, run["worker"]
    job = pair.store.jobs.find_one({"_id": "rolling"})
    assert job["enabled"] is True and job["disabled_reason"] is None
    # RabbitMQ spreads the six messages over both consumers: worker 1 handed its share back
    assert "left to a worker that has it" in pair.cluster.workers[1].log()


def test_an_invalid_job_document_at_a_worker_fails_the_run_and_disables_the_job(pair: Pair) -> None:
    pair.job("mangled", handler="record")
    pair.store.jobs.update_one({"_id": "mangled"}, {"$set": {"args": ["not", "an", "object"]}})
    job = pair.store.find_job("mangled")
    assert job is not None and job.invalid_reason is not None
    now = utcnow()
    run_id = new_run_id(now)  # a run published before the document went bad
    pair.store.insert_run(new_run(job, run_id, Trigger.MANUAL, now, now, None))
    pair.publisher.publish_run(run_id, "mangled")
    run = pair.wait_final(run_id, timeout_s=LEASE_S)
    assert run["status"] == "failed" and run["attempt"] == 0 and run["error"]["type"] == "invalid_job", run
    assert "args: a list, not an object" in run["error"]["message"]
    stored = wait_for(lambda: (doc := pair.store.jobs.find_one({"_id": "mangled"}))["enabled"] is False and doc, 5,
                      "the job disabled")
    assert stored["disabled_reason"].startswith("invalid job document: args: ")
