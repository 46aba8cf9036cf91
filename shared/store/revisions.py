"""Job revisions (`cronhive.revisions`): collection ``job_revisions``, one document
per ``(job_id, revision)`` (``_id`` ``job_id:revision``, unique index on both).

No transactions, so a change is two writes; the job's document is the arbiter:

* create, update, pause, resume (and the scheduler's disable): the job is written
  first (its compare-and-set moves ``revision`` from n to n+1), then revision n+1
  is written keyed by ``(job_id, n+1)`` — a replace-or-insert, so writing it twice
  is harmless. A crash between the two leaves the job at n+1 with no record n+1;
  the next write of the job, and every read of its revisions, first repairs the
  head (`RevisionStore.repair_head`): record n+1 is made from the job as it stands
  (exactly its definition at n+1, diffed against record n, ``at`` its
  ``updated_at``) — only the actor is unknown (None).
* delete: the revision n+1 (``delete``) is inserted first, then the job deleted
  on condition it is still at n; when that matches nothing (changed meanwhile) the
  record is withdrawn and the delete computed again. A crash between the two
  leaves a delete record above the job's revision: it is not shown while the job
  exists (readers show records up to the job's revision), and the next update's
  record n+1 replaces it. Records of a deleted job stay (its history), and a job
  created again with the same id continues the numbering.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from cronhive.domain import Job
from cronhive.errors import JobNotFound
from cronhive.revisions import Revision, definition_of, new_revision
from cronhive.store.base import Document, StoreBase, translated
from cronhive.store.documents import job_from_doc, revision_doc_id, revision_from_doc, revision_to_doc

if TYPE_CHECKING:
    from collections.abc import Mapping

REVISIONS = "job_revisions"
NEWEST_FIRST = [("revision", DESCENDING)]


def new_write_id() -> str:
    return secrets.token_hex(8)


class RevisionStore(StoreBase):
    """The ``job_revisions`` collection."""

    @property
    def revisions(self) -> Collection[Document]:
        return self.db[REVISIONS]

    def ensure_revision_indexes(self) -> None:
        self.revisions.create_index([("job_id", ASCENDING), ("revision", DESCENDING)], name="job_revision",
                                    unique=True)

    def database_now(self) -> datetime:
        """The database's clock (for a caller that passed no instant)."""
        reply = self.client.admin.command("hello", codec_options=self.client.codec_options)
        local: datetime = reply["localTime"]
        return local

    # -- writing -----------------------------------------------------------------

    def write_revision(self, revision: Revision) -> None:
        """Write ``revision`` keyed by ``(job_id, revision)``: idempotent, and it replaces
        what a crashed or refused delete left at that number."""
        doc = revision_to_doc(revision)
        try:
            self.revisions.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        except DuplicateKeyError:  # a concurrent upsert of the same key inserted first
            self.revisions.replace_one({"_id": doc["_id"]}, doc)

    def insert_revision(self, revision: Revision) -> bool:
        """Insert ``revision`` if its number is free (False when it is taken)."""
        try:
            self.revisions.insert_one(revision_to_doc(revision))
        except DuplicateKeyError:
            return False
        return True

    def withdraw_revision(self, revision: Revision) -> None:
        """Remove ``revision`` if it is still the one this write inserted (its write id)."""
        self.revisions.delete_one({"_id": revision_doc_id(revision.job_id, revision.revision),
                                   "write_id": revision.write_id})

    def replace_stale_revision(self, stale: Revision, revision: Revision) -> bool:
        """Replace ``stale`` (matched by its write id) with ``revision``."""
        result = self.revisions.replace_one(
            {"_id": revision_doc_id(stale.job_id, stale.revision), "write_id": stale.write_id},
            revision_to_doc(revision))
        return result.matched_count == 1

    def find_revision(self, job_id: str, number: int) -> Revision | None:
        doc = self.revisions.find_one({"_id": revision_doc_id(job_id, number)})
        return revision_from_doc(doc) if doc is not None else None

    def latest_revision(self, job_id: str) -> Revision | None:
        """The newest record of ``job_id`` (shown or not)."""
        doc = self.revisions.find_one({"job_id": job_id}, sort=NEWEST_FIRST)
        return revision_from_doc(doc) if doc is not None else None

    def repair_head(self, job: Job, now: datetime | None = None) -> None:
        """Make sure the record of the job's current revision exists (see the module
        docstring): made from the job itself when a crash lost it."""
        number = int(job.revision or 0)
        if number <= 0:
            return
        head = self.find_revision(job.job_id, number)
        if head is not None and not head.deleted:
            return
        previous = self.find_revision(job.job_id, number - 1) if number > 1 else None
        before = previous.definition if previous is not None and not previous.deleted else None
        # no record before it either: a job older than revisions (or its first write
        # was lost) — its definition as known now, since it was created
        at = (job.updated_at if before is not None else job.created_at) or job.updated_at or now
        if at is None:
            return
        repaired = new_revision(job, before, None, at, new_write_id())
        if head is None:
            self.insert_revision(repaired)
        else:
            self.replace_stale_revision(head, repaired)

    def record_change(self, before: Mapping[str, Any] | None, after: Job, actor: str | None, at: datetime) -> Revision:
        """Write the revision that moved the job to ``after`` (as written) from ``before``."""
        revision = new_revision(after, before, actor, at, new_write_id())
        self.write_revision(revision)
        return revision

    # -- reading -----------------------------------------------------------------

    def _visible(self, job_id: str) -> Document:
        """The records shown of ``job_id``: all of a deleted job; of a job that exists, up
        to its revision (a delete above it never happened). Repairs the head first."""
        doc = self.jobs.find_one({"_id": job_id})
        query: Document = {"job_id": job_id}
        if doc is not None:
            job = job_from_doc(doc)
            self.repair_head(job)
            query["revision"] = {"$lte": int(job.revision or 0)}
        elif self.revisions.count_documents({"job_id": job_id}, limit=1) == 0:
            raise JobNotFound(f"job {job_id!r} not found", details={"job_id": job_id})
        return query

    @translated
    def job_revisions(self, job_id: str, page: int = 1, limit: int = 20) -> tuple[list[Revision], int]:
        """One page of the job's revisions, newest first, and their total. Answers for a
        deleted job too (`JobNotFound` only when the id never had a revision)."""
        query = self._visible(job_id)
        total = self.revisions.count_documents(query)
        cursor = self.revisions.find(query).sort(NEWEST_FIRST).skip((page - 1) * limit).limit(limit)
        return [revision_from_doc(doc) for doc in cursor], total

    @translated
    def revision_history(self, job_id: str) -> list[Revision]:
        """Every revision of the job shown, oldest first (`cronhive.revisions.definition_at`
        reads the definition at any instant from it). `JobNotFound` as `job_revisions`."""
        query = self._visible(job_id)
        return [revision_from_doc(doc) for doc in self.revisions.find(query).sort([("revision", ASCENDING)])]


__all__ = ["REVISIONS", "RevisionStore", "definition_of", "new_write_id"]
