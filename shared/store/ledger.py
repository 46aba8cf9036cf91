"""What the slot ledger reads (`cronhive.ledger`): a job's scheduled runs in a range
and the runs that stand for slots of it (index "slot_key" and "covering"), and the
leader's slot audit (its watermark in ``leases``, the batched reads of a page of
jobs)."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from cronhive.domain import Job, Run
from cronhive.enums import Trigger
from cronhive.revisions import Revision
from cronhive.store.base import Document, StoreBase, translated
from cronhive.store.documents import job_from_doc, revision_from_doc, run_from_doc
from cronhive.store.revisions import REVISIONS

#: The slot audit's watermark: a document of ``leases``.
AUDIT_ID = "slot_audit"
#: What the ledger and the audit read of a run.
_LEDGER_FIELDS = {"job_id": 1, "trigger": 1, "status": 1, "scheduled_for": 1, "error": 1, "covers_from": 1,
                  "covers_until": 1}
#: What the audit reads of a job.
_AUDIT_JOB_FIELDS = {"schedule": 1, "handler": 1, "timezone": 1, "enabled": 1, "jitter_s": 1, "misfire_grace_s": 1,
                     "tags": 1, "created_at": 1, "updated_at": 1, "revision": 1}


def _ledger_queries(job_ids: list[str], low: datetime, high: datetime) -> tuple[Document, Document]:
    """The scheduled runs in ``[low, high]`` (index "slot_key") and the runs covering part of
    it (index "covering"): two reads, each an index range (one ``$or`` of both is a
    collection scan on a server that plans ``$or`` no better, SecantusDB)."""
    jobs = job_ids[0] if len(job_ids) == 1 else {"$in": job_ids}
    in_range = {"job_id": jobs, "scheduled_for": {"$gte": low, "$lte": high}, "trigger": Trigger.SCHEDULE}
    covering = {"job_id": jobs, "covers_until": {"$gt": low}, "covers_from": {"$lte": high}}
    return in_range, covering


class LedgerStore(StoreBase):
    """Reads for the slot ledger and the leader's audit."""

    @translated
    def ledger_runs(self, job_id: str, low: datetime, high: datetime, limit: int) -> list[Run]:
        """The job's scheduled runs in ``[low, high]`` and the runs covering part of it, in one query."""
        return self._ledger_reads([job_id], low, high, limit)

    @translated
    def ledger_history(self, job: Job, limit: int = 10_000) -> list[Revision]:
        """The job's revisions up to its own (one read, oldest first): its schedule history."""
        query = {"job_id": job.job_id, "revision": {"$lte": int(job.revision or 0)}}
        docs = self.db[REVISIONS].find(query).sort("revision", ASCENDING).limit(limit)
        return [revision_from_doc(doc) for doc in docs]

    @translated
    def ledger_runs_of(self, job_ids: list[str], low: datetime, high: datetime, limit: int) -> list[Run]:
        """`ledger_runs` for several jobs at once (the audit's one read per page of jobs)."""
        if not job_ids:
            return []
        return self._ledger_reads(job_ids, low, high, limit)

    def _ledger_reads(self, job_ids: list[str], low: datetime, high: datetime, limit: int) -> list[Run]:
        seen: dict[str, Run] = {}
        for query in _ledger_queries(job_ids, low, high):
            for doc in self.runs.find(query, _LEDGER_FIELDS).limit(limit):
                seen.setdefault(doc["_id"], run_from_doc(doc))
        return list(seen.values())[:limit]

    @translated
    def audit_jobs(self, after_id: str | None, limit: int) -> list[Job]:
        """A page of enabled jobs in id order after ``after_id`` (the audit walks them all)."""
        query: Document = {"enabled": True}
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        docs = self.jobs.find(query, _AUDIT_JOB_FIELDS).sort("_id", ASCENDING).limit(limit)
        return [job_from_doc(doc) for doc in docs]

    @translated
    def audit_watermark(self) -> datetime | None:
        """Up to when (the audit instant) missed slots have been counted, or None."""
        doc = self.leases.find_one({"_id": AUDIT_ID})
        return doc.get("audited_until") if doc else None

    @translated
    def advance_audit_watermark(self, seen: datetime | None, until: datetime, term: int) -> bool:
        """Move the watermark from ``seen`` (as read) to ``until``; False when another leader
        moved it meanwhile (its count stands, this one is dropped)."""
        if seen is None:
            try:
                self.leases.insert_one({"_id": AUDIT_ID, "audited_until": until, "term": term})
                return True
            except DuplicateKeyError:  # another leader wrote the first watermark
                return False
        result = self.leases.update_one({"_id": AUDIT_ID, "audited_until": seen, "term": {"$not": {"$gt": term}}},
                                        {"$set": {"audited_until": until, "term": term}})
        return result.modified_count == 1
