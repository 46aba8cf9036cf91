"""A database written by the last untyped version (commit 37c91e9) is read, shown and
acted on by this one: ``tests/fixtures/legacy_db.json`` (made by
``tests/fixtures/make_legacy_db.py`` with that version's code) loaded into the real
MongoDB-wire server.

* every job and run document converts to its typed value and back to a document
  whose BSON is byte for byte the stored one (field order and types included);
* the API answers exactly what that version answered (response bodies compared as
  text) for every job, run, job list, run list and the scheduler status;
* the scheduler plans the legacy jobs and the worker starts and finishes legacy
  queued runs, reaps legacy running ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from cronhive.api.app import close_app, create_app
from cronhive.enums import LeaseScope, RunStatus, Trigger
from cronhive.leases import reservation_holder
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.settings import Settings
from cronhive.slots import plan_slots
from cronhive.store import MongoStore
from cronhive.store.documents import job_from_doc, job_to_doc, run_from_doc, run_to_doc
from cronhive.worker.keeper import LeaseKeeper
from cronhive.worker.maintenance import Reaper
from cronhive.worker.middleware import RunLifecycle
from tests.worker.conftest import Delivery, FakeClock, RecordingBroker

FIXTURE = json_util.loads((Path(__file__).parents[1] / "fixtures" / "legacy_db.json").read_text(),
                          json_options=json_util.CANONICAL_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC))
VIEW_AT: datetime = FIXTURE["view_at"]
COLLECTIONS: dict[str, list[dict[str, Any]]] = FIXTURE["collections"]
VIEWS: dict[str, Any] = FIXTURE["views"]
API = "/api/v1/cron"
RAW = CodecOptions(document_class=RawBSONDocument)
LEASE_S = 30


class NoBroker:
    url = "amqp://nowhere/"

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    def publish_run(self, run_id: str, job_id: str) -> None:
        self.published.append((run_id, job_id))

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def legacy(store: MongoStore) -> MongoStore:
    """The store on a database holding the fixture's documents, as the server keeps them."""
    for name, docs in COLLECTIONS.items():
        store.db[name].insert_many(docs, ordered=True)
    for name, digests in FIXTURE["bson_sha256"].items():
        for raw in store.db[name].with_options(codec_options=RAW).find():
            assert hashlib.sha256(raw.raw).hexdigest() == digests[str(raw["_id"])], (name, raw["_id"])
    return store


def raw_docs(store: MongoStore, name: str) -> list[RawBSONDocument]:
    return list(store.db[name].with_options(codec_options=RAW).find().sort("_id", 1))


def test_the_fixture_covers_what_it_claims() -> None:
    runs = COLLECTIONS["runs"]
    jobs = {job["_id"]: job for job in COLLECTIONS["jobs"]}
    assert {run["status"] for run in runs} == set(RunStatus)
    assert {run["trigger"] for run in runs} == set(Trigger)
    assert {(run.get("error") or {}).get("type") for run in runs if run["status"] == "skipped"} >= {
        "misfire", "overlap", "job_not_found"}
    assert any(len(run.get("attempts", [])) == 2 and run["status"] == "failed" for run in runs)
    assert any(run.get("lease") and run.get("lease_scope") == "run" for run in runs)  # an allow run's own lease
    assert any(run.get("recovery_for") is not None for run in runs)
    assert {(job.get("misfire_policy"), job.get("overlap_policy")) for job in jobs.values()} >= {
        (m, o) for m in ("fire_once", "skip", "fire_all") for o in ("forbid", "allow", "buffer_one")}
    assert jobs["tz-null"]["timezone"] is None and "timezone" not in jobs["legacy-minimal"]
    assert jobs["d-reason"]["disabled_reason"] and jobs["d-plain"]["disabled_reason"] is None
    assert not jobs["d-plain"]["enabled"] and not jobs["d-reason"]["enabled"]
    assert jobs["w-buffer"]["buffered_run_id"] and jobs["mx-fire-all-buffer-one"]["buffered_run_id"]
    assert jobs["job_daily_reminder_check"]["jitter_s"] == 0 and jobs["jittered"]["jitter_s"] == 45
    assert {lease["_id"] for lease in COLLECTIONS["leases"]} == {"scheduler", "worker-reaper"}
    assert len(COLLECTIONS["schedulers"]) == 2


@pytest.mark.parametrize("name,decode,encode", [("jobs", job_from_doc, job_to_doc), ("runs", run_from_doc, run_to_doc)])
def test_every_document_converts_to_typed_values_and_back_byte_for_byte(legacy: MongoStore, name: str, decode: Any,
                                                                      encode: Any) -> None:
    raws = raw_docs(legacy, name)
    assert len(raws) == len(COLLECTIONS[name])
    read = {value.job_id: value for value in legacy.list_jobs(1, 1000)[0]} if name == "jobs" else None
    for raw in raws:
        doc = bson.decode(raw.raw, codec_options=legacy.client.codec_options)
        value = decode(doc)
        assert bson.encode(encode(value)) == raw.raw, raw["_id"]
        if read is not None:  # what the store itself returns is that very value
            assert read[raw["_id"]] == value and bson.encode(job_to_doc(read[raw["_id"]])) == raw.raw
        else:
            stored = legacy.get_run(raw["_id"])
            assert stored == value and bson.encode(run_to_doc(stored)) == raw.raw


@pytest.fixture
def legacy_app(legacy: MongoStore, settings: Settings) -> Iterator[Any]:
    app = create_app(settings, store=legacy, publisher=NoBroker())
    app.testing = True
    app.extensions["cronhive"].clock = FakeClock(VIEW_AT)
    yield app.test_client()
    close_app(app)


def test_the_api_answers_exactly_what_the_legacy_version_answered(legacy_app: Any) -> None:
    def text(path: str) -> str:
        response = legacy_app.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return str(response.get_data(as_text=True))

    for job_id, view in VIEWS["jobs"].items():
        assert text(f"{API}/jobs/{job_id}") == view, job_id
    for run_id, view in VIEWS["runs"].items():
        assert text(f"{API}/runs/{run_id}") == view, run_id
    for job_id, view in VIEWS["job_runs"].items():
        assert text(f"{API}/jobs/{job_id}/runs?limit=100") == view, job_id
    assert text(f"{API}/jobs?limit=100") == VIEWS["job_list"]
    assert text(f"{API}/scheduler") == VIEWS["scheduler"]


class Term:
    def __call__(self, now: datetime) -> int:
        return 99  # a newer leader than the fixture's (term 4)


def test_the_scheduler_plans_and_dispatches_the_legacy_jobs(legacy: MongoStore) -> None:
    later = VIEW_AT + timedelta(minutes=10)  # the 11:20 slot is due, 2.3 s late
    for job in legacy.list_jobs(1, 1000)[0]:
        plan_slots(job, later)  # every legacy job can be planned (the disabled ones plan nothing)
    publisher, clock = NoBroker(), FakeClock(later)
    dispatcher = Dispatcher(legacy, publisher, clock, Term(), job_lease_s=LEASE_S, batch=500)
    result = dispatcher.run_pass()
    assert result.fired > 0 and not result.more
    published = {run_id for run_id, _ in publisher.published}
    # the pending legacy slot runs were committed (their jobs moved past them): published first
    pending = {run["_id"] for run in COLLECTIONS["runs"] if run["status"] == "pending"}
    assert pending <= published
    tz_null = legacy.get_job("tz-null")
    assert tz_null.timezone is None and tz_null.next_fire_at == datetime(2026, 3, 26, 11, 30, tzinfo=UTC)
    assert tz_null.due_at == tz_null.next_fire_at  # planned in UTC, its stored null kept
    assert legacy.db.jobs.find_one({"_id": "tz-null"})["timezone"] is None
    for job_id in ("mx-fire-once-allow", "mx-skip-allow", "mx-fire-all-allow"):
        assert legacy.get_job(job_id).last_triggered_at == later
    assert legacy.get_job("legacy-minimal").next_fire_at == datetime(2026, 3, 27, 4, tzinfo=UTC)


@dataclass
class Worker:
    store: MongoStore
    clock: FakeClock
    broker: RecordingBroker
    lifecycle: RunLifecycle

    def deliver(self, run_id: str, settings: Settings) -> Delivery:
        from cronhive.broker import run_message

        run = self.store.get_run(run_id)
        return Delivery(self.lifecycle, self.broker, run_message(settings.runs_queue, run_id, run.job_id))


@pytest.fixture
def worker(legacy: MongoStore, settings: Settings) -> Worker:
    settings = settings.replace(job_lease_s=LEASE_S, retry_backoff_ms=1000)
    clock = FakeClock(VIEW_AT + timedelta(seconds=1))
    keeper = LeaseKeeper(legacy, clock, LEASE_S)
    return Worker(legacy, clock, RecordingBroker(), RunLifecycle(legacy, clock, settings, keeper, worker="new:1"))


def legacy_run(status: str, trigger: str, **match: Any) -> dict[str, Any]:
    return next(run for run in COLLECTIONS["runs"] if run["status"] == status and run["trigger"] == trigger
                and all(run.get(key) == value for key, value in match.items()))


def test_the_worker_starts_and_finishes_a_legacy_queued_run(worker: Worker, settings: Settings) -> None:
    queued = legacy_run("queued", "schedule", job_id="mx-skip-forbid")
    job = worker.store.get_job("mx-skip-forbid")
    assert job.lease is not None and job.lease.holder == reservation_holder(job.lease.run_id or "")
    # the job's reservation is another slot's (its newest run); the queued run waits behind it
    worker.clock.current = job.lease.expires_at + timedelta(seconds=1)  # that reservation lapsed
    delivery = worker.deliver(queued["_id"], settings)
    attempt = delivery.begin()
    assert attempt is not None and attempt.number == 1 and attempt.scope == LeaseScope.JOB
    assert attempt.token == (job.lease_term or 0) + 1
    worker.clock.current += timedelta(seconds=1)
    delivery.end()
    run = worker.store.get_run(queued["_id"])
    assert run.status == RunStatus.SUCCEEDED and [a.status for a in run.attempts] == [RunStatus.SUCCEEDED]
    stored = worker.store.get_job("mx-skip-forbid")
    assert stored.lease is None and stored.last_run_id == queued["_id"]


def test_the_worker_takes_over_a_legacy_reservation_and_a_legacy_retry(worker: Worker, settings: Settings) -> None:
    retrying = legacy_run("queued", "manual", job_id="w-retry-wait")
    worker.clock.current = retrying["retry_at"] + timedelta(milliseconds=1)
    delivery = worker.deliver(retrying["_id"], settings)
    attempt = delivery.begin()
    assert attempt is not None and attempt.number == 2  # the lease handed back to the reservation is taken over
    delivery.end(RuntimeError("again"))
    run = worker.store.get_run(retrying["_id"])
    assert run.status == RunStatus.QUEUED and [a.attempt for a in run.attempts] == [1, 2]  # one retry left
    allow = legacy_run("queued", "schedule", job_id="mx-fire-all-allow")
    assert worker.deliver(allow["_id"], settings).begin() is not None  # allow: the run's own lease


def test_the_reaper_resolves_legacy_running_runs(worker: Worker, settings: Settings) -> None:
    republished: list[tuple[str, int]] = []
    reaper = Reaper(worker.store, worker.clock, settings.replace(job_lease_s=LEASE_S),
                    lambda run, after: republished.append((run.run_id, after)), "new:1")
    worker.clock.current = VIEW_AT + timedelta(minutes=30)  # every legacy attempt's lease has expired
    report = reaper.run_once(worker.clock.now())
    assert report is not None
    running = {run["_id"]: run for run in COLLECTIONS["runs"] if run["status"] == "running"}
    assert set(report.abandoned) | set(report.recovered) == set(running)
    for run_id in report.abandoned:
        assert worker.store.get_run(run_id).status == RunStatus.ABANDONED
