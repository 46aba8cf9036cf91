"""What a handler is told and how its failure is reported, in real worker processes
(``python -m cronhive.worker``) on the real RabbitMQ and MongoDB-wire store.

- ``ctx.fencing_token`` is the attempt's lease token (the run's ``lease_token``)
  and grows across attempts and across the runs of a ``forbid`` job; a downstream
  write fenced on it (the README's pattern) refuses a stalled older attempt.
- A failing handler is logged once, at WARNING, with the job and run ids — no
  ERROR line and no traceback from Dramatiq — and the run's ``error`` carries the
  traceback excerpt (``error.traceback``), which the API shows.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from cronhive.broker import RunPublisher
from cronhive.dispatch import trigger_job
from cronhive.domain import FINAL_RUN_STATUSES, run_view, utcnow
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.store.documents import run_from_doc
from cronhive.worker.tracebacks import MAX_FRAMES, MAX_TRACEBACK_CHARS, traceback_excerpt
from tests import services
from tests.worker.cluster import WorkerCluster, wait_for
from tests.worker.handlers_for_fencing import read

LEASE_S = 3
BACKOFF_MS = 200

pytestmark = pytest.mark.slow


@dataclass
class Workers:
    settings: Settings
    store: MongoStore
    publisher: RunPublisher
    cluster: WorkerCluster

    def job(self, job_id: str, **fields: Any) -> str:
        job_id = f"{job_id}_{uuid.uuid4().hex[:6]}"
        self.store.create_job({"job_id": job_id, "name": job_id, "schedule": "0 0 1 1 *", "enabled": False,
                               **fields}, utcnow())
        return job_id

    def trigger(self, job_id: str) -> str:
        return trigger_job(self.store, self.publisher, job_id, utcnow(), LEASE_S).run_id

    def wait_final(self, run_id: str, timeout_s: float = 30) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            run = self.store.runs.find_one({"_id": run_id})  # the stored document
            return run if run["status"] in FINAL_RUN_STATUSES else None

        return wait_for(final, timeout_s, f"run {run_id} to finish")

    def wait_running(self, run_id: str, attempt: int, timeout_s: float) -> dict[str, Any]:
        def running() -> dict[str, Any] | None:
            run = self.store.runs.find_one({"_id": run_id})  # the stored document
            return run if run["status"] == "running" and run["attempt"] == attempt else None

        return wait_for(running, timeout_s, f"attempt {attempt} of {run_id} to run")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for text in self.cluster.logs().values():
            for line in text.splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"level": "raw", "event": line})
        return events


@pytest.fixture(scope="module")
def workers(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    tag = uuid.uuid4().hex[:10]
    base_env = {key: value for key, value in os.environ.items()
                if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    env = {
        **base_env,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"cronhive_outcomes_{tag}",
        "MONGODB_TIMEOUT_MS": "2000",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "JOB_LEASE_S": str(LEASE_S),
        "RETRY_BACKOFF_MS": str(BACKOFF_MS),
        "HANDLER_MODULES": "tests.worker.handlers_for_fencing",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    settings = Settings.from_env(env)
    store = MongoStore.open(settings)
    store.ensure_indexes()
    publisher = RunPublisher.open(settings)
    cluster = WorkerCluster(env, tmp_path_factory.mktemp("outcomes"), 2)
    try:
        cluster.start()
        yield Workers(settings, store, publisher, cluster)
    finally:
        cluster.stop()
        publisher.close()
        store.client.drop_database(settings.mongodb_db)
        store.close()
        queue = settings.runs_queue
        services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")


@pytest.fixture(autouse=True)
def both_workers_up(workers: Workers) -> Iterator[None]:
    workers.cluster.start()
    yield
    for worker in workers.cluster.workers:
        if worker.alive():
            worker.signal_tree(signal.SIGCONT)


# -- fencing --------------------------------------------------------------------


def test_the_handler_sees_the_attempts_lease_token_growing_across_attempts(workers: Workers, tmp_path: Path) -> None:
    probes = tmp_path / "probes"
    job_id = workers.job("fence", handler="fence_probe", args={"file": str(probes), "fail_attempts": 2},
                         max_retries=2)

    run_id = workers.trigger(job_id)
    run = workers.wait_final(run_id)

    assert run["status"] == "succeeded" and run["attempt"] == 3
    seen = [probe for probe in read(str(probes)) if probe["run_id"] == run_id]
    assert [probe["attempt"] for probe in seen] == [1, 2, 3]
    tokens = [probe["fencing_token"] for probe in seen]
    assert tokens == sorted(set(tokens)), tokens  # strictly increasing
    assert tokens[-1] == run["lease_token"]  # the token the run records for its attempt

    # the next run of the (forbid) job holds the job's lease after it: a larger token still
    second_id = workers.trigger(job_id)
    second = workers.wait_final(second_id)
    second_tokens = [probe["fencing_token"] for probe in read(str(probes)) if probe["run_id"] == second_id]
    assert second["status"] == "succeeded"  # attempt 1 of the second run fails, then it succeeds
    assert min(second_tokens) > tokens[-1]
    assert second_tokens[-1] == second["lease_token"]


def test_a_fenced_downstream_write_refuses_a_stalled_older_attempt(workers: Workers, tmp_path: Path) -> None:
    """A worker SIGSTOPped past its lease overlaps the next attempt when it wakes; its
    handler here ignores the lease-loss interrupt (as one blocked in a system call
    does) and writes anyway: the fence on the downstream write keeps it out."""
    events = tmp_path / "events"
    job_id = workers.job("ledger", handler="fenced_write", args={"file": str(events), "seconds": [60, 0.5]},
                         max_retries=1)
    run_id = workers.trigger(job_id)
    first = workers.wait_running(run_id, 1, 15)
    stalled = workers.cluster.by_worker_name(first["worker"])
    stalled.signal_tree(signal.SIGSTOP)
    try:
        second = workers.wait_running(run_id, 2, LEASE_S + 20)
        assert second["lease_token"] > first["lease_token"]
        wait_for(lambda: ("applied", 2) in outcomes(events), 20, "the second attempt's write")
    finally:
        stalled.signal_tree(signal.SIGCONT)  # the stale attempt wakes, is interrupted, writes anyway

    wait_for(lambda: ("refused", 1) in outcomes(events) or ("applied", 1) in outcomes(events), 20,
             "the stalled attempt's write")
    assert ("interrupted", 1) in outcomes(events)
    assert ("refused", 1) in outcomes(events) and ("applied", 1) not in outcomes(events)
    run = workers.wait_final(run_id)
    assert run["status"] == "succeeded" and run["attempt"] == 2
    client: MongoClient[dict[str, Any]] = MongoClient(workers.settings.mongodb_uri)
    try:
        downstream = client[workers.settings.mongodb_db]["downstream"].find_one({"_id": job_id})
    finally:
        client.close()
    assert downstream is not None
    assert downstream["attempt"] == 2 and downstream["fencing_token"] == second["lease_token"]


def outcomes(events: Path) -> set[tuple[str, int]]:
    return {(event["event"], event["attempt"]) for event in read(str(events)) if "event" in event}


# -- failure reporting ----------------------------------------------------------


def lines_about(workers: Workers, run_id: str) -> list[dict[str, Any]]:
    return [event for event in workers.log_events() if event.get("run_id") == run_id]


def test_a_failing_handler_is_one_warning_with_ids_and_its_traceback_is_on_the_run(workers: Workers) -> None:
    job_id = workers.job("broken", handler="fail", args={"message": "disk full"})

    run_id = workers.trigger(job_id)
    run = workers.wait_final(run_id)

    assert run["status"] == "failed"
    wait_for(lambda: any(e.get("level") == "warning" for e in lines_about(workers, run_id)), 10, "the warning")
    lines = lines_about(workers, run_id)
    warnings = [event for event in lines if event.get("level") == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["job_id"] == job_id and warnings[0]["attempt"] == 1
    assert "failed" in warnings[0]["event"] and "HandlerFailed: disk full" in warnings[0]["event"]
    assert not [event for event in lines if event.get("level") in ("error", "critical")], lines
    everything = "\n".join(json.dumps(event) for event in workers.log_events())
    assert "unhandled exception" not in everything
    assert "Traceback" not in everything and "exc_info" not in everything

    error = run["error"]
    assert error["type"] == "HandlerFailed" and error["message"] == "disk full"
    excerpt = error["traceback"]
    assert excerpt.endswith("cronhive.handlers.HandlerFailed: disk full")
    assert "in fail" in excerpt and "raise HandlerFailed" in excerpt
    assert "dramatiq" not in excerpt and "execute_run" not in excerpt  # the machinery's frames are cut
    assert run_view(run_from_doc(run))["error"]["traceback"] == excerpt  # and the API shows it


def test_each_failed_attempt_of_a_retried_run_is_one_warning(workers: Workers, tmp_path: Path) -> None:
    job_id = workers.job("flaky", handler="fence_probe", args={"file": str(tmp_path / "p"), "fail_attempts": 5},
                         max_retries=1)

    run_id = workers.trigger(job_id)
    run = workers.wait_final(run_id)

    assert run["status"] == "failed" and run["attempt"] == 2
    wait_for(lambda: len([e for e in lines_about(workers, run_id) if e.get("level") == "warning"]) >= 2, 10,
             "two warnings")
    warnings = [event for event in lines_about(workers, run_id) if event.get("level") == "warning"]
    assert sorted(event["attempt"] for event in warnings) == [1, 2], warnings
    assert not [event for event in lines_about(workers, run_id) if event.get("level") in ("error", "critical")]
    assert "ProbeFailure: attempt 2 fails on purpose" in run["error"]["traceback"]
    assert run["attempts"][0]["error"]["traceback"].endswith("ProbeFailure: attempt 1 fails on purpose")


def test_runs_that_did_not_raise_show_a_null_traceback() -> None:
    view = run_view(run_from_doc({"_id": "run_x", "job_id": "j", "trigger": "manual", "status": "abandoned",
                                  "error": {"type": "abandoned", "message": "worker died"}}))
    assert view["error"] == {"type": "abandoned", "message": "worker died", "traceback": None}
    assert run_view(run_from_doc({"_id": "run_y", "job_id": "j", "trigger": "manual",
                                  "status": "succeeded"}))["error"] is None


# -- the excerpt ----------------------------------------------------------------


def nested(depth: int) -> None:
    if depth == 0:
        raise ValueError("deep " + "x" * 10_000)
    nested(depth - 1)


def test_the_excerpt_keeps_the_last_frames_and_is_bounded() -> None:
    try:
        nested(20)
    except ValueError as exc:
        excerpt = traceback_excerpt(exc)
    assert excerpt is not None
    assert excerpt.count('File "') == MAX_FRAMES
    assert len(excerpt) <= MAX_TRACEBACK_CHARS
    assert "raise ValueError" in excerpt and "ValueError: deep" in excerpt
    assert traceback_excerpt(ValueError("never raised")) is None
