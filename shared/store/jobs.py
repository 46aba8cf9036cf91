"""Jobs: created, read, listed, updated and deleted through the API; the trigger's
and the worker's writes on a job (``last_triggered_at``, the buffered run, the
outcome of a run).

Every schedule computation is the domain's (`cronhive.domain.new_job`,
`cronhive.domain.job_update`); this module only reads and writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from cronhive.domain import Job, job_id_for_name, job_update, new_job
from cronhive.enums import JobStatus, RunStatus
from cronhive.errors import Conflict, DuplicateJob, JobNotFound
from cronhive.leases import Lease, reservation_holder
from cronhive.store import leases
from cronhive.store.base import Document, StoreBase, translated
from cronhive.store.documents import job_from_doc, job_status_filter, job_to_doc

MAX_GENERATED_ID_ATTEMPTS = 50
MAX_UPDATE_ATTEMPTS = 10


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"job {job_id!r} not found", details={"job_id": job_id})


class JobStore(StoreBase):
    """The ``jobs`` collection."""

    @translated
    def create_job(self, fields: Mapping[str, Any], now: datetime) -> Job:
        """Insert a job. ``fields`` are validated API fields; ``job_id`` optional.

        A given ``job_id`` that exists raises `DuplicateJob`; a generated one
        (``job_`` + slug of the name) gets a numeric suffix until unique.
        """
        given_id = fields.get("job_id")
        for attempt in range(MAX_GENERATED_ID_ATTEMPTS):
            job = new_job(given_id or job_id_for_name(fields["name"], attempt), fields, now)
            try:
                self.jobs.insert_one(job_to_doc(job))
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
                  handler: str | None = None) -> tuple[list[Job], int]:
        """One page in creation order (then id), and the total matching."""
        query: Document = {}
        if status is not None:
            query.update(job_status_filter(status))
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
    def update_job(self, job_id: str, changes: Mapping[str, Any], now: datetime) -> Job:
        """Apply a partial update (`cronhive.domain.job_update` decides what it sets),
        by compare-and-set on the revision it was computed from: a concurrent change
        makes it compute again from the fresh job, and `Conflict` after a few tries."""
        for _ in range(MAX_UPDATE_ATTEMPTS):
            current = self.get_job(job_id)
            doc = self.jobs.find_one_and_update(
                {"_id": job_id, "revision": current.revision},
                {"$set": job_update(current, changes, now), "$inc": {"revision": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return job_from_doc(doc)
        raise Conflict(f"job {job_id!r} is being changed concurrently; retry", details={"job_id": job_id})

    @translated
    def delete_job(self, job_id: str) -> None:
        """Remove a job; its run history stays until retention removes it."""
        if self.jobs.delete_one({"_id": job_id}).deleted_count == 0:
            raise _not_found(job_id)

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
                           lease: Lease | None) -> bool:
        """The job's ``last_run_*``; under a job lease, released in the same update
        (filtered on its holder and token, so only the holder can)."""
        outcome = {"last_run_id": run_id, "last_run_status": status, "last_run_duration_ms": duration_ms}
        if lease is None:
            return self.jobs.update_one({"_id": job_id}, {"$set": outcome}).modified_count == 1
        return leases.release(self.jobs, lease, extra_set=outcome)
