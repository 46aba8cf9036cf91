"""cronhive.store against the real MongoDB-wire server: jobs (create, get, list,
update, delete), the run and lease helpers the API uses, the scheduler status,
indexes, and connectivity failures as `StoreUnavailable`. Values come back typed;
what is stored is read back raw where its shape matters."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import InvalidOperation

from cronhive.domain import DEFAULT_POLICIES, Job, jitter_offset, job_update, new_run
from cronhive.enums import JobStatus, LeaseScope, RunStatus, Trigger
from cronhive.errors import Conflict, DuplicateJob, JobNotFound, NotFound, RunNotFound, StoreUnavailable, Unavailable
from cronhive.leases import reservation_holder
from cronhive.settings import Settings
from cronhive.store import LEADER_LEASE_ID, SCHEDULERS, MongoStore
from cronhive.store.base import ID_CHUNK, delete_by_ids, find_by_ids, id_chunks, update_by_ids
from cronhive.store.documents import job_from_doc
from tests import services

T0 = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "Daily Reminder Check", "schedule": "0 8 * * *", "handler": "noop"}
    base.update(changes)
    return base


# -- lifecycle -----------------------------------------------------------------------


def test_ensure_indexes_is_idempotent_and_creates_what_queries_need(store: MongoStore) -> None:
    store.ensure_indexes()
    store.ensure_indexes()
    job_indexes = store.jobs.index_information()
    run_indexes = store.runs.index_information()
    assert job_indexes["created_order"]["key"] == [("created_at", 1), ("_id", 1)]
    assert job_indexes["due"]["key"] == [("due_at", 1)]
    assert {"by_handler"} <= set(job_indexes)
    assert run_indexes["job_history"]["key"] == [("job_id", 1), ("created_at", -1), ("_id", -1)]
    slot_key = run_indexes["slot_key"]
    assert slot_key["unique"] is True and slot_key["partialFilterExpression"] == {"trigger": "schedule"}
    backfill_key = run_indexes["backfill_key"]  # one backfill run per slot
    assert backfill_key["key"] == [("job_id", 1), ("scheduled_for", 1)]
    assert backfill_key["unique"] is True and backfill_key["partialFilterExpression"] == {"trigger": "backfill"}


def test_the_client_is_tz_aware_and_closed_only_when_owned(settings: Settings, store: MongoStore) -> None:
    assert store.client.codec_options.tz_aware is True
    borrowed = MongoStore(store.client, settings.mongodb_db, owns_client=False)
    borrowed.close()
    store.ping()  # the borrowed store did not close the fixture's client
    own = MongoStore.open(settings)
    own.ping()
    own.close()
    with pytest.raises(InvalidOperation):  # "Cannot use MongoClient after close"
        own.ping()


def test_server_time_is_the_databases_clock(store: MongoStore) -> None:
    server = store.server_time()
    assert server.tzinfo is not None
    assert abs(server - datetime.now(UTC)) < timedelta(minutes=5)


# -- create --------------------------------------------------------------------------


RUN_KEYS = ["_id", "job_id", "trigger", "scheduled_for", "status", "attempt", "lease_token", "worker", "created_at",
            "queued_at", "started_at", "finished_at", "duration_ms", "lateness_ms", "error", "job_incarnation"]
JOB_KEYS = ["_id", "name", "schedule", "timezone", "handler", "args", "enabled", "misfire_policy", "misfire_grace_s",
            "overlap_policy", "jitter_s", "timeout_s", "max_retries", "created_at", "updated_at", "revision",
            "next_fire_at", "due_at", "last_triggered_at", "last_run_id", "last_run_status", "last_run_duration_ms",
            "lease", "lease_term", "disabled_reason", "buffered_run_id", "incarnation"]


def test_create_job_writes_the_whole_document(store: MongoStore) -> None:
    job = store.create_job(fields(args={"x": 1}, jitter_s=30), T0)
    assert job == store.get_job("job_daily_reminder_check")
    doc = store.jobs.find_one({"_id": "job_daily_reminder_check"})
    assert list(doc) == JOB_KEYS  # the document's shape, in the order every version wrote it
    assert job_from_doc(doc) == job
    assert doc["_id"] == job.job_id == "job_daily_reminder_check"
    assert (doc["timezone"], doc["args"], doc["enabled"]) == ("UTC", {"x": 1}, True)
    assert doc["created_at"] == doc["updated_at"] == T0 and doc["revision"] == 1
    assert doc["next_fire_at"] == datetime(2026, 3, 27, 8, tzinfo=UTC)
    assert doc["due_at"] == doc["next_fire_at"] + jitter_offset(doc["_id"], 30)
    assert (doc["lease"], doc["lease_term"], doc["buffered_run_id"]) == (None, 0, None)
    assert isinstance(doc["incarnation"], str) and len(doc["incarnation"]) == 16  # which creation of the id
    for key in ("last_triggered_at", "last_run_id", "last_run_status", "last_run_duration_ms", "disabled_reason"):
        assert doc[key] is None
    for key, default in DEFAULT_POLICIES.items():
        assert doc[key] == (30 if key == "jitter_s" else default)
        assert type(doc[key]) is type(default.value if hasattr(default, "value") else default)  # plain BSON values


def test_create_disabled_job_has_a_slot_but_is_not_due(store: MongoStore) -> None:
    job = store.create_job(fields(enabled=False), T0)
    assert job.due_at is None and job.next_fire_at is None and job.status == JobStatus.DISABLED


def test_generated_ids_are_made_unique_and_given_ids_conflict(store: MongoStore) -> None:
    ids = [store.create_job(fields(), T0).job_id for _ in range(3)]
    assert ids == ["job_daily_reminder_check", "job_daily_reminder_check_2", "job_daily_reminder_check_3"]
    store.create_job(fields(job_id="fixed"), T0)
    with pytest.raises(DuplicateJob) as info:
        store.create_job(fields(job_id="fixed", name="other"), T0)
    assert info.value.details == {"job_id": "fixed"}
    assert store.get_job("fixed").name == "Daily Reminder Check"


# -- read ----------------------------------------------------------------------------


def test_unknown_job_is_not_found(store: MongoStore) -> None:
    with pytest.raises(JobNotFound) as info:
        store.get_job("nope")
    assert isinstance(info.value, LookupError) and isinstance(info.value, NotFound)


def test_list_jobs_pages_in_creation_order_with_filters(store: MongoStore) -> None:
    for i, (job_id, handler, enabled) in enumerate(
        [("e", "noop", True), ("d", "sleep", True), ("c", "noop", False), ("b", "noop", True), ("a", "sleep", False)]
    ):
        store.create_job(fields(job_id=job_id, handler=handler, enabled=enabled), T0 + timedelta(seconds=i // 2))
    ids = lambda jobs: [job.job_id for job in jobs]  # noqa: E731
    docs, total = store.list_jobs(1, 10)
    assert ids(docs) == ["d", "e", "b", "c", "a"] and total == 5  # created_at, then _id
    docs, total = store.list_jobs(2, 2)
    assert ids(docs) == ["b", "c"] and total == 5
    assert store.list_jobs(4, 2) == ([], 5)
    docs, total = store.list_jobs(1, 10, status=JobStatus.ACTIVE)
    assert ids(docs) == ["d", "e", "b"] and total == 3
    docs, total = store.list_jobs(1, 10, status=JobStatus.DISABLED, handler="sleep")
    assert ids(docs) == ["a"] and total == 1


# -- update --------------------------------------------------------------------------


def test_update_recomputes_the_slot_when_timing_changes(store: MongoStore) -> None:
    store.create_job(fields(job_id="j"), T0)
    later = T0 + timedelta(minutes=30)
    doc = store.update_job("j", {"schedule": "0 12 * * *", "timezone": "Europe/Berlin"}, later)
    assert doc.next_fire_at == datetime(2026, 3, 26, 11, tzinfo=UTC)  # 12:00 CET
    assert doc.due_at == doc.next_fire_at and doc.updated_at == later and doc.created_at == T0
    assert doc.revision == 2
    doc = store.update_job("j", {"jitter_s": 120}, later)
    assert doc.due_at == doc.next_fire_at + jitter_offset("j", 120)


def test_update_without_timing_change_keeps_the_slot(store: MongoStore) -> None:
    created = store.create_job(fields(job_id="j"), T0)
    doc = store.update_job("j", {"name": "Renamed", "schedule": "0 8 * * *", "args": {"a": 1}}, T0 + timedelta(days=2))
    assert doc.name == "Renamed" and doc.args == {"a": 1}
    assert (doc.next_fire_at, doc.due_at) == (created.next_fire_at, created.due_at)


def test_disable_keeps_the_slot_and_enable_makes_it_due_again(store: MongoStore) -> None:
    created = store.create_job(fields(job_id="j", jitter_s=60), T0)
    disabled = store.update_job("j", {"enabled": False}, T0 + timedelta(minutes=1))
    assert disabled.due_at is None and disabled.next_fire_at == created.next_fire_at
    enabled = store.update_job("j", {"enabled": True}, T0 + timedelta(days=3))
    assert enabled.due_at == created.due_at  # the missed slot, with its jitter: the misfire policy decides
    assert enabled.disabled_reason is None


def test_enable_of_a_job_created_disabled_counts_from_now(store: MongoStore) -> None:
    store.create_job(fields(job_id="j", enabled=False), T0)
    doc = store.update_job("j", {"enabled": True}, T0 + timedelta(days=1))
    assert doc.next_fire_at == datetime(2026, 3, 28, 8, tzinfo=UTC) == doc.due_at


def test_timing_change_while_disabled_moves_the_slot_to_the_new_schedule(store: MongoStore) -> None:
    store.create_job(fields(job_id="j"), T0)
    store.update_job("j", {"enabled": False}, T0)
    doc = store.update_job("j", {"schedule": "0 9 * * *"}, T0 + timedelta(days=1))  # the 27th, 10:00
    assert doc.due_at is None and doc.next_fire_at == datetime(2026, 3, 28, 9, tzinfo=UTC)
    doc = store.update_job("j", {"enabled": True}, T0 + timedelta(days=1, hours=1))
    assert doc.due_at == datetime(2026, 3, 28, 9, tzinfo=UTC)


def test_job_update_is_a_pure_function_of_the_read_job() -> None:
    current = Job(job_id="j", name="j", schedule="0 8 * * *", handler="noop", timezone="UTC", jitter_s=0, enabled=True,
                  next_fire_at=T0 + timedelta(hours=22), due_at=T0 + timedelta(hours=22))
    assert job_update(current, {"name": "x"}, T0) == {"name": "x", "updated_at": T0}
    assert job_update(current, {"enabled": False}, T0) == {"enabled": False, "updated_at": T0, "due_at": None}


def test_a_concurrent_change_between_read_and_write_is_not_overwritten(store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_job(fields(job_id="j"), T0)
    real_get_job = store.get_job
    interfered = []

    def get_job_then_someone_disables(job_id: str) -> Job:
        doc = real_get_job(job_id)
        if not interfered:  # another API replica disables the job right after our read
            interfered.append(True)
            store.jobs.update_one({"_id": job_id}, {"$set": {"enabled": False, "due_at": None}, "$inc": {"revision": 1}})
        return doc

    monkeypatch.setattr(store, "get_job", get_job_then_someone_disables)
    doc = store.update_job("j", {"schedule": "0 9 * * *"}, T0)
    # computed again from the fresh document: still disabled, so not due
    assert doc.schedule == "0 9 * * *" and doc.enabled is False and doc.due_at is None
    assert doc.revision == 3


def test_update_gives_up_with_a_conflict_when_the_job_never_holds_still(store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_job(fields(job_id="j"), T0)
    real_get_job = store.get_job

    def always_stale(job_id: str) -> Job:
        doc = real_get_job(job_id)
        store.jobs.update_one({"_id": job_id}, {"$inc": {"revision": 1}})
        return doc

    monkeypatch.setattr(store, "get_job", always_stale)
    with pytest.raises(Conflict):
        store.update_job("j", {"name": "x"}, T0)


def test_update_and_delete_of_unknown_jobs(store: MongoStore) -> None:
    with pytest.raises(JobNotFound):
        store.update_job("nope", {"name": "x"}, T0)
    with pytest.raises(JobNotFound):
        store.delete_job("nope")
    store.create_job(fields(job_id="j"), T0)
    store.delete_job("j")
    with pytest.raises(JobNotFound):
        store.get_job("j")


# -- runs and the job lease, as the trigger uses them --------------------------------------


def test_a_run_from_reservation_to_queued(store: MongoStore) -> None:
    job = store.create_job(fields(job_id="j"), T0)
    lease = store.claim_lease(LeaseScope.JOB, "j", reservation_holder("run_1"), 30, T0, run_id="run_1")
    assert lease is not None and lease.holder == "run:run_1" and lease.token == 1
    assert store.claim_lease(LeaseScope.JOB, "j", reservation_holder("run_2"), 30, T0 + timedelta(seconds=29)) is None
    store.insert_run(new_run(job, "run_1", Trigger.MANUAL, T0, T0, lease))
    # as every version first wrote a run, then the job's revision it was created at
    assert list(store.runs.find_one({"_id": "run_1"})) == [*RUN_KEYS, "job_revision"]
    run = store.get_run("run_1")
    assert (run.status, run.lease_token, run.attempt, run.trigger) == ("pending", 1, 0, "manual")
    assert store.mark_run_queued("run_1", T0) is True
    assert store.mark_run_queued("run_1", T0) is False  # only pending becomes queued
    assert store.get_run("run_1").queued_at == T0 and store.get_run("run_1").status == RunStatus.QUEUED
    renewed = store.renew_lease(lease, 30, T0 + timedelta(seconds=10))
    assert renewed is not None and renewed.expires_at == T0 + timedelta(seconds=40)
    assert store.release_lease(renewed) is True and store.get_job("j").lease is None


def test_note_triggered_keeps_the_latest(store: MongoStore) -> None:
    store.create_job(fields(job_id="j"), T0)
    store.note_triggered("j", T0 + timedelta(minutes=5))
    store.note_triggered("j", T0 + timedelta(minutes=1))  # a slower concurrent trigger does not move it back
    assert store.get_job("j").last_triggered_at == T0 + timedelta(minutes=5)


def test_one_buffered_run_at_a_time(store: MongoStore) -> None:
    store.create_job(fields(job_id="j", overlap_policy="buffer_one"), T0)
    assert store.reserve_buffer_slot("j", "run_1") is True
    assert store.reserve_buffer_slot("j", "run_2") is False
    store.clear_buffer_slot("j", "run_2")  # not the waiting run: no effect
    assert store.get_job("j").buffered_run_id == "run_1"
    store.clear_buffer_slot("j", "run_1")
    assert store.reserve_buffer_slot("j", "run_2") is True


def test_runs_are_listed_newest_first_and_deleted(store: MongoStore) -> None:
    job = store.create_job(fields(job_id="j"), T0)
    for i in range(3):
        store.insert_run(new_run(job, f"run_{i}", Trigger.MANUAL, T0, T0 + timedelta(seconds=i), None))
    runs, total = store.list_runs("j", 1, 2, job.incarnation)
    assert [run.run_id for run in runs] == ["run_2", "run_1"] and total == 3
    store.delete_run("run_2")
    with pytest.raises(RunNotFound):
        store.get_run("run_2")
    assert store.list_runs("other", 1, 20, job.incarnation) == ([], 0)
    assert store.list_runs("j", 1, 20, "another-incarnation") == ([], 0)  # a deleted job's runs of that id


def test_one_scheduled_run_per_slot(store: MongoStore) -> None:
    from pymongo.errors import DuplicateKeyError

    job = store.create_job(fields(job_id="j"), T0)
    slot = T0 + timedelta(hours=22)
    store.insert_run(new_run(job, "run_a", Trigger.SCHEDULE, slot, T0, None))
    with pytest.raises(DuplicateKeyError):
        store.insert_run(new_run(job, "run_b", Trigger.SCHEDULE, slot, T0, None))
    store.insert_run(new_run(job, "run_c", Trigger.MANUAL, slot, T0, None))  # manual runs are not slots
    store.insert_run(new_run(job, "run_d", Trigger.MANUAL, slot, T0, None))


# -- scheduler status ----------------------------------------------------------------------


def test_scheduler_status(store: MongoStore) -> None:
    assert store.scheduler_status(T0).view() == {"holder": None, "pid": None, "term": None, "lease_expires_at": None,
                                                 "standbys": []}
    lease = {"holder": "host-a:321", "token": 5, "run_id": None, "expires_at": T0 + timedelta(seconds=10)}
    store.leases.insert_one({"_id": LEADER_LEASE_ID, "lease": lease, "lease_term": 5})
    store.db[SCHEDULERS].insert_many([
        {"_id": "host-a:321", "expires_at": T0 + timedelta(seconds=10)},
        {"_id": "host-c:9", "expires_at": T0 + timedelta(seconds=10)},
        {"_id": "host-b:8", "expires_at": T0 + timedelta(seconds=10)},
        {"_id": "host-d:1", "expires_at": T0},
    ])
    assert store.scheduler_status(T0).view() == {
        "holder": "host-a:321", "pid": 321, "term": 5, "lease_expires_at": "2026-03-26T10:00:10Z",
        "standbys": ["host-b:8", "host-c:9"],
    }
    expired = store.scheduler_status(T0 + timedelta(seconds=10)).view()
    assert expired == {"holder": None, "pid": None, "term": 5, "lease_expires_at": None, "standbys": []}


def test_scheduler_status_with_an_odd_holder_name(store: MongoStore) -> None:
    lease = {"holder": "no-pid-here", "token": 1, "run_id": None, "expires_at": T0 + timedelta(seconds=10)}
    store.leases.insert_one({"_id": LEADER_LEASE_ID, "lease": lease, "lease_term": 1})
    status = store.scheduler_status(T0)
    assert status.holder == "no-pid-here" and status.pid is None


# -- MongoDB unreachable ---------------------------------------------------------------------


def test_every_operation_raises_store_unavailable_when_mongodb_is_unreachable(settings: Settings) -> None:
    port = services.free_port()
    dead = MongoStore.open(settings.replace(mongodb_uri=f"mongodb://admin:hunter2@127.0.0.1:{port}", mongodb_timeout_ms=200))
    calls = [  # each waits for the server-selection timeout (~0.5 s at least): a sample, not all
        dead.ensure_indexes, lambda: dead.create_job(fields(), T0), lambda: dead.get_job("j"),
        lambda: dead.list_jobs(1, 20), lambda: dead.update_job("j", {"name": "x"}, T0), lambda: dead.delete_job("j"),
        lambda: dead.scheduler_status(T0),
    ]
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert time.monotonic() - started < 10  # the server-selection timeout, not pymongo's 30 s default
            assert isinstance(info.value, Unavailable)
            assert "hunter2" not in info.value.message and f"127.0.0.1:{port}" in info.value.message
    finally:
        dead.close()


def test_lists_of_ids_are_read_and_written_a_chunk_at_a_time_with_the_same_result(store: MongoStore) -> None:
    coll = store.db["chunked"]
    count = 2 * ID_CHUNK + 7
    coll.insert_many([{"_id": f"d{i:04d}", "n": i, "even": i % 2 == 0} for i in range(count)])
    ids = [f"d{i:04d}" for i in range(count)] + ["gone"]
    assert [len(chunk) for chunk in id_chunks(ids)] == [ID_CHUNK, ID_CHUNK, 8]
    assert [doc_id for chunk in id_chunks(ids) for doc_id in chunk] == ids  # in order, each once
    assert list(id_chunks([])) == []

    assert {doc["_id"] for doc in find_by_ids(coll, ids)} == set(ids) - {"gone"}
    evens = list(find_by_ids(coll, ids, {"_id": 0, "n": 1}, {"even": True}))
    assert sorted(doc["n"] for doc in evens) == list(range(0, count, 2)) and set(evens[0]) == {"n"}
    evens_count = len(range(0, count, 2))
    assert update_by_ids(coll, ids, {"even": True}, {"$set": {"marked": True}}) == evens_count
    assert coll.count_documents({"marked": True}) == evens_count
    assert update_by_ids(coll, [], {}, {"$set": {"marked": False}}) == 0
    first = ids[:ID_CHUNK + 1]  # a chunk and one more: two operations of one bulk write
    assert delete_by_ids(coll, first, {"marked": True}) == len(range(0, ID_CHUNK + 1, 2))
    assert coll.count_documents({}) == count - len(range(0, ID_CHUNK + 1, 2))
