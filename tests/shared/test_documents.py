"""cronhive.store.documents, the store edge: documents ↔ typed values (layout, absent
fields, unknown fields, BSON types) and the writes built from typed values. Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from bson.int64 import Int64

from cronhive.domain import AttemptEnd, AttemptRecord, AttemptStart, Heartbeat, Run, RunError, new_job, new_run
from cronhive.enums import ErrorType, LeaseScope, MisfirePolicy, OverlapPolicy, RunStatus, SchedulerRole, Trigger
from cronhive.leases import Lease
from cronhive.slots import JobAdvance
from cronhive.store import documents
from cronhive.store.documents import job_from_doc, job_to_doc, run_from_doc, run_to_doc

T0 = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)


def job_fields(**more: Any) -> dict[str, Any]:
    return {"name": "J", "schedule": "0 8 * * *", "handler": "noop", **more}


def test_a_new_job_is_laid_out_as_every_version_created_it() -> None:
    job = new_job("j", job_fields(overlap_policy="allow"), T0)
    doc = job_to_doc(job)
    assert list(doc) == list(documents.JOB_KEYS)
    assert doc["overlap_policy"] == "allow" and doc["lease"] is None and doc["lease_term"] == 0
    assert job_from_doc(doc) == job
    # enumerations are stored as their plain strings
    plain = {**doc, "misfire_policy": "fire_once", "overlap_policy": "allow"}
    assert bson.encode(doc) == bson.encode(plain)


def test_a_read_job_writes_back_its_own_layout_with_the_fields_it_does_not_model() -> None:
    doc = job_to_doc(new_job("j", job_fields(), T0))
    doc = {"sched_mark": "4.1.9", **{key: doc[key] for key in reversed(list(doc))}, "sched_term": Int64(4)}
    job = job_from_doc(doc)
    assert job.stored is not None and job.stored.extra == {"sched_mark": "4.1.9", "sched_term": 4}
    back = job_to_doc(job)
    assert list(back) == list(doc) and bson.encode(back) == bson.encode(doc)
    assert isinstance(back["sched_term"], Int64)  # BSON types pass through


def test_fields_absent_from_an_old_job_read_as_defaults_and_stay_absent() -> None:
    doc = {"_id": "old", "name": "Old", "schedule": "0 4 * * *", "handler": "noop", "enabled": True,
           "created_at": T0, "revision": 1, "next_fire_at": T0, "due_at": T0, "lease": None, "lease_term": 0}
    job = job_from_doc(doc)
    assert (job.timezone, job.zone, job.args, job.misfire_policy, job.overlap_policy, job.timeout_s) == (
        "UTC", "UTC", {}, MisfirePolicy.FIRE_ONCE, OverlapPolicy.FORBID, 3600)
    assert job_to_doc(job) == doc and list(job_to_doc(job)) == list(doc)
    # a field that changed from what its absence means is written (after the stored ones)
    changed = job_to_doc(replace(job, buffered_run_id="run_x", jitter_s=5))
    assert list(changed) == [*doc, "jitter_s", "buffered_run_id"]


def test_stored_nulls_that_mean_something_stay_none() -> None:
    doc = {**job_to_doc(new_job("j", job_fields(), T0)), "timezone": None, "timeout_s": None}
    job = job_from_doc(doc)
    assert job.timezone is None and job.zone == "UTC" and job.timeout_s is None
    assert bson.encode(job_to_doc(job)) == bson.encode(doc)


def test_a_job_lease_is_typed_with_its_scope_and_document() -> None:
    sub = {"holder": "run:r", "run_id": "r", "token": 3, "expires_at": T0}
    job = job_from_doc({**job_to_doc(new_job("j", job_fields(), T0)), "lease": sub, "lease_term": 3})
    assert job.lease == Lease(LeaseScope.JOB, "j", "run:r", 3, T0, "r")
    assert job_to_doc(job)["lease"] == sub and list(job_to_doc(job)["lease"]) == list(sub)


def test_a_new_run_is_laid_out_as_first_written_and_a_slot_run_carries_its_term() -> None:
    job = new_job("j", job_fields(), T0)
    manual = new_run(job, "r1", Trigger.MANUAL, T0, T0, None)
    assert list(run_to_doc(manual)) == [*documents.RUN_KEYS, "job_revision"]  # the job's, while it is unchanged
    slot = replace(new_run(job, "r2", Trigger.SCHEDULE, T0, T0, None, RunStatus.SKIPPED), sched_term=7,
                   error=RunError(ErrorType.MISFIRE, "late"))
    doc = run_to_doc(slot)
    assert list(doc) == [*documents.RUN_KEYS, "sched_term", "job_revision"]
    assert doc["error"] == {"type": "misfire", "message": "late"} and doc["status"] == "skipped"
    assert run_from_doc(doc) == slot


def test_a_run_with_attempts_and_its_own_lease_round_trips() -> None:
    lease = Lease(LeaseScope.RUN, "r", "w:1:r:2:ab", 2, T0 + timedelta(seconds=30), "r")
    record = AttemptRecord(1, "w:1", RunStatus.FAILED, T0, T0 + timedelta(seconds=1), 1000, RunError("ValueError", "x"))
    run = Run("r", "j", Trigger.MANUAL, RunStatus.RUNNING, scheduled_for=T0, attempt=2, lease_token=2, worker="w:1",
              created_at=T0, lease_term=2, lease=lease, lease_holder=lease.holder, lease_scope=LeaseScope.RUN,
              attempts=(record,))
    doc = run_to_doc(run)
    assert list(doc)[len(documents.RUN_KEYS):] == ["lease_term", "lease", "lease_holder", "lease_scope", "attempts"]
    assert doc["attempts"] == [{"attempt": 1, "worker": "w:1", "status": "failed", "started_at": T0,
                                "finished_at": T0 + timedelta(seconds=1), "duration_ms": 1000,
                                "error": {"type": "ValueError", "message": "x"}}]
    read = run_from_doc({**doc, "recovery_for": 2, "recovery_at": T0})
    assert replace(read, stored=None) == run and read.stored is not None
    assert list(run_to_doc(read))[-2:] == ["recovery_for", "recovery_at"]  # kept, in place


def test_lease_filter_and_the_lease_as_read() -> None:
    lease = Lease(LeaseScope.JOB, "j", "a", 4, T0)
    assert documents.lease_filter(lease) == {"_id": "j", "lease.holder": "a", "lease.token": 4}
    assert documents.lease_as_read(None, None) == {"lease_term": None, "lease": None}
    assert documents.lease_as_read(lease, 4) == {"lease_term": 4, "lease.holder": "a", "lease.token": 4,
                                                 "lease.expires_at": T0}


def test_an_advance_writes_what_the_overlap_decision_read_and_decided() -> None:
    job = replace(new_job("j", job_fields(), T0), revision=3, lease_term=4)
    reservation = Lease(LeaseScope.JOB, "j", "run:r", 5, T0, "r")
    later = T0 + timedelta(hours=1)
    expect, changes = documents.advance_write(JobAdvance(job, later, later, True, lease_decided=True,
                                                         buffer_decided=True, reservation=reservation,
                                                         buffered_run_id="r2"))
    assert expect == {"revision": 3, "next_fire_at": job.next_fire_at, "lease_term": 4, "lease": None,
                      "buffered_run_id": None}
    assert list(changes) == ["next_fire_at", "due_at", "lease_term", "lease", "buffered_run_id"]
    assert changes["lease"] == {"holder": "run:r", "run_id": "r", "token": 5, "expires_at": T0}
    expect, changes = documents.advance_write(JobAdvance(job, later, later, False))
    assert (expect, changes) == ({"revision": 3, "next_fire_at": job.next_fire_at},
                                 {"next_fire_at": later, "due_at": later})


def test_attempt_writes_keep_the_field_order_every_version_wrote() -> None:
    lease = Lease(LeaseScope.JOB, "j", "w:1:r:1:ab", 3, T0)
    start = documents.attempt_start_set(AttemptStart(1, lease, "w:1", T0, 12))
    assert list(start) == ["status", "attempt", "lease_token", "lease_holder", "lease_scope", "worker", "started_at",
                           "lateness_ms", "finished_at", "duration_ms", "error", "retry_at", "attempt_id"]
    assert (start["status"], start["lease_scope"], start["lease_token"]) == ("running", "job", 3)
    error = RunError("ValueError", "bad")
    final = documents.attempt_end_set(AttemptEnd(RunStatus.FAILED, error, finished_at=T0, duration_ms=5,
                                                 releases_run_lease=True))
    assert final == {"status": "failed", "finished_at": T0, "duration_ms": 5,
                     "error": {"type": "ValueError", "message": "bad"}, "retry_at": None, "lease": None}
    retry = documents.attempt_end_set(AttemptEnd(RunStatus.QUEUED, error, duration_ms=5, retry_at=T0))
    assert list(retry) == ["status", "duration_ms", "error", "retry_at"]
    dead = documents.attempt_end_set(AttemptEnd(RunStatus.ABANDONED, error, finished_at=T0))
    assert list(dead) == ["status", "finished_at", "error", "retry_at"]


def test_a_heartbeat_names_its_host_and_pid() -> None:
    beat = Heartbeat("host-a:321", SchedulerRole.LEADER, 5)
    assert documents.heartbeat_set(beat) == {"role": "leader", "term": 5, "host": "host-a", "pid": 321}
    assert documents.heartbeat_set(Heartbeat("odd", SchedulerRole.STANDBY, None))["pid"] is None
