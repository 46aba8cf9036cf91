"""A deleted job's history does not come back (issue 14, item 4), against two real
worker processes: deleting a job removes its runs and its lease; a message for it
still queued (or a run written for it racing the delete) is consumed after a job with
the same id was created again and changes nothing of that new job, whose history
starts empty, with no lease and ``last_run_*`` null; an attempt still running at the
delete never writes its outcome on the new job."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cronhive.broker import RunPublisher, run_message
from cronhive.dispatch import trigger_job
from cronhive.domain import FINAL_RUN_STATUSES, Job, new_run, new_run_id, utcnow
from cronhive.enums import Trigger
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.worker.cluster import WorkerCluster, wait_for
from tests.worker.handlers_for_tests import read_events

LEASE_S = 3
#: How long the held-back messages wait on RabbitMQ (Dramatiq's delay queue) before a worker gets them.
HELD_MS = 3000

pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    settings: Settings
    store: MongoStore
    publisher: RunPublisher
    workers: WorkerCluster

    def job(self, job_id: str, events: Path, **fields: Any) -> Job:
        body = {"job_id": job_id, "name": job_id, "schedule": "0 0 1 1 *", "handler": "record", "enabled": True,
                "args": {"file": str(events), "seconds": 0.1}, **fields}
        return self.store.create_job(body, utcnow())

    def trigger(self, job_id: str) -> str:
        return trigger_job(self.store, self.publisher, job_id, utcnow(), LEASE_S).run_id

    def held_run(self, job: Job) -> str:
        """A run of ``job`` whose message reaches a worker only `HELD_MS` from now."""
        now = utcnow()
        run_id = new_run_id(now)
        self.store.insert_run(new_run(job, run_id, Trigger.MANUAL, now, now, None))
        self.publisher.broker.enqueue(run_message(self.settings.runs_queue, run_id, job.job_id), delay=HELD_MS)
        return run_id

    def wait_final(self, run_id: str, timeout_s: float = 20) -> dict[str, Any]:
        return wait_for(lambda: (run := self.store.runs.find_one({"_id": run_id}))["status"] in FINAL_RUN_STATUSES
                        and run, timeout_s, f"run {run_id} to end")

    def logs(self) -> str:
        return "".join(self.workers.logs().values())


@pytest.fixture(scope="module")
def cluster(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tag = uuid.uuid4().hex[:10]
    base_env = {key: value for key, value in os.environ.items()
                if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    env = {**base_env, "MONGODB_URI": mongodb_uri, "MONGODB_DB": f"cronhive_deleted_{tag}",
           "RABBITMQ_URL": rabbitmq_url, "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "JOB_LEASE_S": str(LEASE_S),
           "HANDLER_MODULES": "tests.worker.handlers_for_tests", "METRICS_PORT": "0", "LOG_LEVEL": "INFO"}
    settings = Settings.from_env(env)
    store = MongoStore.open(settings)
    store.ensure_indexes()
    publisher = RunPublisher.open(settings)
    workers = WorkerCluster(env, tmp_path_factory.mktemp("workers"), 2)
    try:
        workers.start()
        yield Cluster(settings, store, publisher, workers)
    finally:
        workers.stop()
        publisher.close()
        store.client.drop_database(settings.mongodb_db)
        store.close()
        services.delete_queues(rabbitmq_url, settings.runs_queue, f"{settings.runs_queue}.DQ",
                               f"{settings.runs_queue}.XQ")


def assert_clean(store: MongoStore, job_id: str) -> dict[str, Any]:
    """The re-created job as a new one: no history, no lease, no last run."""
    job = store.get_job(job_id)
    assert store.list_runs(job_id, 1, 100, job.incarnation) == ([], 0)
    doc = store.jobs.find_one({"_id": job_id})
    assert (doc["last_run_id"], doc["last_run_status"], doc["last_run_duration_ms"]) == (None, None, None), doc
    assert doc["last_triggered_at"] is None and doc["lease"] is None and doc["buffered_run_id"] is None, doc
    return doc


@pytest.mark.parametrize("overlap", ["forbid", "allow"])
def test_messages_queued_before_a_delete_and_consumed_after_the_re_create_change_nothing(
        cluster: Cluster, tmp_path: Path, overlap: str) -> None:
    events = tmp_path / "events"
    job_id = f"phoenix_{overlap}"
    old = cluster.job(job_id, events, overlap_policy=overlap)
    first = cluster.wait_final(cluster.trigger(job_id))
    assert first["status"] == "succeeded"
    wait_for(lambda: cluster.store.jobs.find_one({"_id": job_id})["last_run_id"] == first["_id"], 5,
             "the outcome on the job (written right after the run's)")
    held = cluster.held_run(old)  # queued, not yet delivered

    cluster.store.delete_job(job_id)
    assert cluster.store.runs.count_documents({"job_id": job_id}) == 0  # the history and the held run are gone
    straggler = cluster.held_run(old)  # a run written for the old job racing the delete (a late trigger)
    new = cluster.job(job_id, events, overlap_policy=overlap)
    assert new.incarnation != old.incarnation
    assert_clean(cluster.store, job_id)

    skipped = cluster.wait_final(straggler, timeout_s=HELD_MS / 1000 + 15)
    assert skipped["status"] == "skipped" and skipped["error"]["type"] == "job_not_found", skipped
    wait_for(lambda: f"{held}" in cluster.logs() and "does not exist" in cluster.logs(), 15,
             "the held message acknowledged as a run that does not exist")
    time.sleep(0.5)
    assert_clean(cluster.store, job_id)  # neither touched the new job
    ran = {event["run_id"] for event in read_events(str(events)) if event["event"] == "start"}
    assert ran == {first["_id"]}

    again = cluster.wait_final(cluster.trigger(job_id))  # the new job works, and its history is its own
    assert again["status"] == "succeeded" and again["job_incarnation"] == new.incarnation
    runs, total = cluster.store.list_runs(job_id, 1, 100, new.incarnation)
    assert total == 1 and runs[0].run_id == again["_id"]
    wait_for(lambda: cluster.store.jobs.find_one({"_id": job_id})["last_run_id"] == again["_id"], 5,
             "the new run's outcome on the job")


@pytest.mark.parametrize("overlap", ["forbid", "allow"])
def test_an_attempt_running_at_the_delete_never_writes_on_the_re_created_job(
        cluster: Cluster, tmp_path: Path, overlap: str) -> None:
    events = tmp_path / "events"
    job_id = f"ember_{overlap}"
    cluster.job(job_id, events, overlap_policy=overlap, args={"file": str(events), "seconds": 1.5})
    run_id = cluster.trigger(job_id)
    wait_for(lambda: any(e["run_id"] == run_id and e["event"] == "start" for e in read_events(str(events))), 15,
             "the handler to start")
    cluster.store.delete_job(job_id)
    cluster.job(job_id, events, overlap_policy=overlap)
    wait_for(lambda: any(run_id in line and "late write rejected" in line for line in cluster.logs().splitlines()),
             15, "the old attempt's outcome to be rejected")
    time.sleep(1.0)  # its outcome write, had it been made
    assert_clean(cluster.store, job_id)
    assert cluster.store.runs.find_one({"_id": run_id}) is None
