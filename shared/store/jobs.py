"""Jobs: created, read, listed, updated and deleted through the API; the trigger's
and the worker's writes on a job (``last_triggered_at``, the buffered run, the
outcome of a run).

Every schedule computation is the domain's (`cronhive.domain.new_job`,
`cronhive.domain.job_update`); this module only reads and writes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from cronhive.domain import Job, JobOutcome, job_id_for_name, job_update, new_job
from cronhive.enums import NOT_STARTED, JobStatus, RunStatus
from cronhive.errors import Conflict, DuplicateJob, JobNotFound, PreconditionFailed
from cronhive.leases import Lease, reservation_holder
from cronhive.revisions import Revision, definition_of, deletion
from cronhive.store.base import Document, translated
from cronhive.store.documents import (
    job_from_doc,
    job_status_filter,
    job_to_doc,
    job_update_set,
)
from cronhive.store.group_commit import Cas, applied, applied_each, cas, holds
from cronhive.store.leases import hand_on_recording_cas, release_recording_cas
from cronhive.store.revisions import RevisionStore, new_write_id
from cronhive.windows import MaintenanceWindow

MAX_GENERATED_ID_ATTEMPTS = 50
MAX_UPDATE_ATTEMPTS = 10
#: A delete record older than this whose job still exists was left by a crashed delete.
STALE_DELETE = timedelta(seconds=30)
#: How long a delete waits for another one in flight on the same job, per attempt.
DELETE_BACKOFF_S = 0.05


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"job {job_id!r} not found", details={"job_id": job_id})


def _precondition_failed(job: Job, expected: int) -> PreconditionFailed:
    return PreconditionFailed(
        f"job {job.job_id!r} is at revision {job.revision}, not {expected}: it changed since it was read",
        details={"job_id": job.job_id, "revision": job.revision, "if_match": expected})


def _named_by(windows: Sequence[MaintenanceWindow]) -> list[Document]:
    """The conditions matching the jobs ``windows`` name (by id or by tag)."""
    ids = sorted({job_id for window in windows for job_id in window.job_ids})
    tags = sorted({tag for window in windows if not window.job_ids for tag in window.tags})
    return [*([{"_id": {"$in": ids}}] if ids else []), *([{"tags": {"$in": tags}}] if tags else [])]


class JobStore(RevisionStore):
    """The ``jobs`` collection (and each change's revision, `cronhive.store.revisions`)."""

    @translated
    def create_job(self, fields: Mapping[str, Any], now: datetime, *, actor: str | None = None) -> Job:
        """Insert a job. ``fields`` are validated API fields; ``job_id`` optional.

        A given ``job_id`` that exists raises `DuplicateJob`; a generated one
        (``job_`` + slug of the name) gets a numeric suffix until unique. Its
        revision continues the numbering of a deleted job of the same id.
        """
        given_id = fields.get("job_id")
        for attempt in range(MAX_GENERATED_ID_ATTEMPTS):
            job = new_job(given_id or job_id_for_name(fields["name"], attempt), fields, now)
            previous = self.latest_revision(job.job_id)
            if previous is not None:
                job = replace(job, revision=previous.revision + 1)
            try:
                self.jobs.insert_one(job_to_doc(job))
                self.record_change(None, job, actor, now)
                return job
            except DuplicateKeyError:
                if given_id:
                    raise DuplicateJob(f"job_id {given_id!r} already exists", details={"job_id": given_id}) from None
        raise DuplicateJob(f"could not generate a unique job_id for {fields['name']!r}")

    @translated
    def get_job(self, job_id: str) -> Job:
        doc = self.jobs.find_one({"_id": job_id})
        if doc is None:
            raise _not_found(job_id)
        return job_from_doc(doc)

    @translated
    def find_job(self, job_id: str) -> Job | None:
        doc = self.jobs.find_one({"_id": job_id})
        return job_from_doc(doc) if doc is not None else None

    @translated
    def list_jobs(self, page: int, limit: int, *, status: JobStatus | None = None,
                  handler: str | None = None, tag: str | None = None,
                  open_windows: Sequence[MaintenanceWindow] = ()) -> tuple[list[Job], int]:
        """One page in creation order (then id), and the total matching (``tag``: index "by_tag").
        ``status`` ``paused``: the enabled jobs ``open_windows`` name; ``active``: the others."""
        query: Document = {}
        if tag is not None:
            query["tags"] = tag
        if status is not None:
            named = _named_by(open_windows)
            if status == JobStatus.PAUSED:
                conditions: list[Document] = [{"enabled": True}, {"$or": named or [{"_id": {"$in": []}}]}]
            else:
                conditions = [job_status_filter(status)]
                if status == JobStatus.ACTIVE and named:
                    conditions.append({"$nor": named})
            query["$and"] = conditions
        if handler is not None:
            query["handler"] = handler
        total = self.jobs.count_documents(query)
        cursor = (
            self.jobs.find(query)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .skip((page - 1) * limit)
            .limit(limit)
        )
        return [job_from_doc(doc) for doc in cursor], total

    @translated
    def update_job(self, job_id: str, changes: Mapping[str, Any], now: datetime, *, actor: str | None = None,
                   expected_revision: int | None = None) -> Job:
        """Apply a partial update (`cronhive.domain.job_update` decides what it sets),
        by compare-and-set on the revision it was computed from: a concurrent change
        makes it compute again from the fresh job, and `Conflict` after a few tries.
        ``expected_revision`` (``If-Match``): `PreconditionFailed` unless the job is at
        it — the compare-and-set's own condition, so of writers racing from the same
        revision exactly one succeeds. Writes the change's revision (by ``actor``)."""
        for _ in range(MAX_UPDATE_ATTEMPTS):
            current = self.get_job(job_id)
            if expected_revision is not None and current.revision != expected_revision:
                raise _precondition_failed(current, expected_revision)
            self.repair_head(current, now)
            self.void_run_snapshots(current)
            doc = self.jobs.find_one_and_update(
                {"_id": job_id, "revision": current.revision},
                {"$set": job_update_set(job_update(current, changes, now)), "$inc": {"revision": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                updated = job_from_doc(doc)
                self.record_change(definition_of(current), updated, actor, now)
                return updated
        raise Conflict(f"job {job_id!r} is being changed concurrently; retry", details={"job_id": job_id})

    @translated
    def delete_job(self, job_id: str, now: datetime | None = None, *, actor: str | None = None,
                   expected_revision: int | None = None) -> None:
        """Remove a job, its lease (on the document) and its run history (and with it the
        run leases of ``allow`` runs): a job re-created with the same id starts clean. Its
        revisions stay for good (the last one: this delete). ``expected_revision`` as in
        `update_job`.

        The delete's revision is inserted first, then the job deleted on condition it is
        still at the revision read (see `cronhive.store.revisions`), then the runs of that
        incarnation (`Job.incarnation`), so a job re-created meanwhile keeps its own runs.
        A run written for the deleted job after that (a trigger or a slot racing the
        delete), or left because MongoDB failed in between, still carries the old
        incarnation: no history shows it (`list_runs`), no worker runs it (it is recorded
        ``skipped``), no write of it reaches the new job, and retention removes it."""
        at = now or self.database_now()
        for _ in range(MAX_UPDATE_ATTEMPTS):
            current = self.get_job(job_id)
            if expected_revision is not None and current.revision != expected_revision:
                raise _precondition_failed(current, expected_revision)
            self.repair_head(current, at)
            record = deletion(current, actor, at, new_write_id())
            if not self.insert_revision(record) and not self._take_over_stale_delete(record, at):
                time.sleep(DELETE_BACKOFF_S)  # another delete in flight, or the job just changed
                continue
            self.void_run_snapshots(current)
            if self.jobs.delete_one({"_id": job_id, "revision": current.revision}).deleted_count == 1:
                self.runs.delete_many({"job_id": job_id, "job_incarnation": current.incarnation})
                return
            self.withdraw_revision(record)  # the job changed (or went) meanwhile: compute again
        raise Conflict(f"job {job_id!r} is being changed concurrently; retry", details={"job_id": job_id})

    def void_run_snapshots(self, job: Job) -> int:
        """Before ``job`` is changed or deleted: its runs not started stop trusting the
        snapshot of it their messages carry (`Run.job_revision` set to None), so a worker
        reads the job as it is before starting one (`cronhive.snapshots`). Written before
        the job, so a start that read nothing either happened before the change began or
        sees it. A change that then does not apply costs those runs only a read."""
        result = self.runs.update_many(
            {"job_id": job.job_id, "job_incarnation": job.incarnation, "status": {"$in": list(NOT_STARTED)},
             "job_revision": {"$ne": None}},
            {"$set": {"job_revision": None}})
        return result.modified_count

    def _take_over_stale_delete(self, record: Revision, at: datetime) -> bool:
        """Revision ``record``'s number is taken: by a delete that crashed long ago (its
        job still here) — replace it — or by a change still in flight (False)."""
        taken = self.find_revision(record.job_id, record.revision)
        if taken is None or not taken.deleted or taken.at > at - STALE_DELETE:
            return False
        return self.replace_stale_revision(taken, record)

    @translated
    def disable_broken_job(self, job_id: str, reason: str, now: datetime) -> bool:
        """A worker disables a job it found it cannot run (handler unknown to every live
        worker, invalid document), with ``disabled_reason``; False if already disabled."""
        result = self.jobs.update_one(
            {"_id": job_id, "enabled": {"$ne": False}},
            {"$set": {"enabled": False, "due_at": None, "disabled_reason": reason, "updated_at": now},
             "$inc": {"revision": 1}})
        return result.modified_count == 1

    @translated
    def handler_on_other_workers(self, handler: str, queue: str, worker: str, now: datetime) -> bool:
        """Whether a live worker other than ``worker``, consuming ``queue``, lists ``handler``
        in its heartbeat (collection ``workers``, see `cronhive.heartbeats`)."""
        query = {"expires_at": {"$gt": now}, "queue": queue, "handlers": handler, "_id": {"$ne": worker}}
        return self.db["workers"].count_documents(query, limit=1) > 0

    @translated
    def note_triggered(self, job_id: str, at: datetime) -> None:
        """``last_triggered_at`` moves forward only (a slower concurrent trigger does not move it back)."""
        self.jobs.update_one({"_id": job_id}, {"$max": {"last_triggered_at": at}})

    @translated
    def reserve_buffer_slot(self, job_id: str, run_id: str) -> bool:
        """``buffer_one``: make ``run_id`` the one run waiting for the lease, if none waits."""
        result = self.jobs.update_one({"_id": job_id, "buffered_run_id": None}, {"$set": {"buffered_run_id": run_id}})
        return result.modified_count == 1

    @translated
    def release_reservation(self, job_id: str, run_id: str) -> bool:
        """Free the job's lease while the reservation of ``run_id`` (``run:<run_id>``, a
        run not started, or a retry waiting) holds it, and its buffered place."""
        self.clear_buffer_slot(job_id, run_id)
        result = self.jobs.update_one({"_id": job_id, "lease.holder": reservation_holder(run_id)},
                                      {"$set": {"lease": None}})
        return result.modified_count == 1

    @translated
    def clear_buffer_slot(self, job_id: str, run_id: str) -> None:
        self.jobs.update_one({"_id": job_id, "buffered_run_id": run_id}, {"$set": {"buffered_run_id": None}})

    @translated
    def record_job_outcome(self, job_id: str, run_id: str, status: RunStatus, duration_ms: int | None,
                           lease: Lease | None, incarnation: str | None) -> bool:
        """The job's ``last_run_*``; under a job lease, released in the same update
        (filtered on its holder and token, so only the holder can). Only on the job's
        ``incarnation`` the run was created for: never on a job re-created with its id.
        Written through the store's group commit (one command for the outcomes of many
        worker threads)."""
        return applied(self.jobs, _outcome_cas(JobOutcome(job_id, run_id, status, duration_ms, lease, incarnation)))

    @translated
    def record_job_outcomes(self, outcomes: Sequence[JobOutcome]) -> list[bool]:
        """`record_job_outcome` of each of ``outcomes`` (distinct jobs), in one batch of
        the store's group commit: whether each applied."""
        return applied_each(self.jobs, [_outcome_cas(outcome) for outcome in outcomes])

    @translated
    def hand_on_recording(self, outcome: JobOutcome, run_id: str, until: datetime) -> Lease | None:
        """`record_job_outcome` under ``outcome.lease`` that, instead of freeing it, makes
        it the reservation of the job's next waiting slot run ``run_id`` (``run:<run_id>``,
        the next token, until ``until``), in the same update: the reservation as written,
        or None when it did not apply (the lease no longer the outcome's)."""
        assert outcome.lease is not None
        lease = outcome.lease
        reservation = Lease(lease.scope, lease.doc_id, reservation_holder(run_id), lease.token + 1, until, run_id)
        write = hand_on_recording_cas(lease, reservation, _recorded(outcome), {"incarnation": outcome.incarnation})
        return reservation if applied(self.jobs, write) else None


def _recorded(outcome: JobOutcome) -> Document:
    return {"last_run_id": outcome.run_id, "last_run_status": outcome.status,
            "last_run_duration_ms": outcome.duration_ms}


def _outcome_cas(outcome: JobOutcome) -> Cas:
    recorded = _recorded(outcome)
    on_incarnation = {"incarnation": outcome.incarnation}
    if outcome.lease is None:
        return cas(outcome.job_id, on_incarnation, {"$set": recorded}, holds(recorded))
    return release_recording_cas(outcome.lease, recorded, on_incarnation)
