"""The leader scheduler's writes (scheduler/), the schedulers' heartbeats, and the
leadership status the API shows.

Fencing: every write the leader makes carries its term (the leader lease's token).
Job writes filter on ``sched_term`` not above the term and set it, so once a newer
leader has written a job an older one can no longer; run writes record the term
(``sched_term``) and re-publishing adopts a run into the term. Job advances are
also compare-and-set on what was read (`cronhive.slots.JobAdvance`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from pymongo import ASCENDING, ReturnDocument

from cronhive.domain import Heartbeat, Job, Run, RunError, SchedulerStatus
from cronhive.enums import LeaseScope, RunStatus
from cronhive.leases import reservation_holder
from cronhive.revisions import SCHEDULER_ACTOR, definition_of
from cronhive.slots import JobAdvance
from cronhive.store import leases
from cronhive.store.base import (
    Document,
    delete_by_ids,
    find_by_ids,
    insert_new,
    translated,
    update_by_ids,
    updates_by_ids,
)
from cronhive.store.documents import advance_write, error_to_doc, heartbeat_set, job_from_doc, run_from_doc, run_to_doc
from cronhive.store.group_commit import Cas, Statement, cas, holds, statements
from cronhive.store.revisions import RevisionStore

log = logging.getLogger("cronhive.store")

#: The leader lease's document in ``leases``.
LEADER_LEASE_ID = "scheduler"
#: A slot run an earlier leader wrote but never committed is still one of these.
DRAFT_STATUSES = [RunStatus.PENDING, RunStatus.SKIPPED]
#: Compare-and-sets moving a withdrawn slot's job back before giving up (each after
#: the job changed again in between).
MOVE_BACK_ATTEMPTS = 5
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def fenced(term: int) -> Document:
    """Matches documents no leader newer than ``term`` has written (or none at all)."""
    return {"sched_term": {"$not": {"$gt": term}}}


def _group_key(expect: Document, changes: Document, triggered: bool) -> str:
    return repr((sorted(expect.items()), sorted(changes.items()), triggered))


class SchedulingStore(RevisionStore):
    """What the leader reads and writes, heartbeats, and ``GET /scheduler``."""

    @translated
    def due_jobs(self, now: datetime, limit: int) -> list[Job]:
        """Jobs due at ``now``, earliest first (index "due": a range scan, no ``$or``), read
        whole: the runs they fire are published with the job's snapshot, ``args``
        included (`cronhive.snapshots`)."""
        cursor = self.jobs.find({"due_at": {"$lte": now}})
        return [job_from_doc(doc) for doc in cursor.sort("due_at", ASCENDING).limit(limit)]

    @translated
    def earliest_due_by(self, until: datetime) -> datetime | None:
        """The earliest ``due_at`` of the enabled jobs due by ``until`` (index "due"), or
        None when none is. Bounded because a range read costs as many documents as it
        matches on SecantusDB (sort and limit come after): over every enabled job it took
        21 ms at 1,000 jobs and 200 ms at 10,000, where MongoDB walks the index."""
        doc = self.jobs.find_one({"due_at": {"$gt": _EPOCH, "$lte": until}}, {"due_at": 1},
                                 sort=[("due_at", ASCENDING)])
        return doc["due_at"] if doc else None

    @translated
    def count_due_by(self, at: datetime, limit: int) -> int:
        """How many enabled jobs are due by ``at`` (index "due"), counting at most ``limit``."""
        return self.jobs.count_documents({"due_at": {"$gt": _EPOCH, "$lte": at}}, limit=limit)

    @translated
    def insert_scheduled_runs(self, runs: list[Run]) -> list[Run]:
        """Insert slot runs in one unordered batch; returns those whose slot already had a run."""
        existing = insert_new(self.runs, [run_to_doc(run) for run in runs])
        return [runs[index] for index in sorted(existing)]
        return []

    @translated
    def adopt_scheduled_run(self, run: Run, term: int) -> bool:
        """Overwrite a slot's run that an earlier leader wrote but never committed
        (still ``pending`` or ``skipped``). False when the slot's run went further."""
        query = {"_id": run.run_id, "status": {"$in": DRAFT_STATUSES}, **fenced(term)}
        return self.runs.replace_one(query, run_to_doc(run)).matched_count == 1

    @translated
    def advance_jobs(self, advances: list[JobAdvance], term: int, mark: str, now: datetime) -> set[str]:
        """Apply the compare-and-set job writes in one bulk; the ids of the jobs they applied to.

        Advances with identical conditions and changes (a herd of jobs on one
        schedule) share an ``UpdateMany`` per `cronhive.store.base.ID_CHUNK` jobs; the
        others, each its own values (a reservation names its run), go as pipelined
        updates of one shape each (`cronhive.store.group_commit.statements`). ``mark``
        (unique per call) is written to ``sched_mark``, so an applied advance always
        modifies its job; only when fewer jobs were modified than advanced are they
        read back to tell which applied.
        """
        if not advances:
            return set()
        groups: dict[str, list[tuple[JobAdvance, Document, Document]]] = {}
        for advance in advances:
            expect, changes = advance_write(advance)
            groups.setdefault(_group_key(expect, changes, advance.triggered), []).append((advance, expect, changes))
        ops: list[Statement] = []
        singles: list[Cas] = []
        for group in groups.values():
            sample, expect, changes = group[0]
            update: Document = {"$set": {**changes, "sched_term": term, "sched_mark": mark}}
            if sample.triggered:
                update["$max"] = {"last_triggered_at": now}
            conditions = {**expect, **fenced(term)}
            if len(group) == 1:
                singles.append(cas(sample.job_id, conditions, update, holds({"sched_mark": mark})))
            else:
                ops += updates_by_ids([member.job_id for member, _, _ in group], conditions, update)
        ops += [op for op, _ in statements(singles)]
        ids = [advance.job_id for advance in advances]
        if self.jobs.bulk_write(ops, ordered=False).modified_count == len(ids):
            return set(ids)
        return {doc["_id"] for doc in find_by_ids(self.jobs, ids, {"sched_mark": 1}) if doc.get("sched_mark") == mark}

    @translated
    def delete_scheduled_drafts(self, run_ids: list[str], term: int) -> int:
        """Delete slot runs whose job advance never applied (drafts: never published)."""
        if not run_ids:
            return 0
        return delete_by_ids(self.runs, run_ids, {"status": {"$in": DRAFT_STATUSES}, **fenced(term)})

    @translated
    def mark_runs_queued(self, run_ids: list[str], at: datetime, term: int) -> int:
        """``pending`` → ``queued`` (``queued_at`` = ``at``) for runs RabbitMQ confirmed, in one command."""
        if not run_ids:
            return 0
        update = {"$set": {"status": RunStatus.QUEUED, "queued_at": at, "sched_term": term}}
        return update_by_ids(self.runs, run_ids, {"status": RunStatus.PENDING, **fenced(term)}, update)

    @translated
    def pending_runs(self, limit: int) -> list[Run]:
        """The oldest unpublished runs (index "by_status"), oldest first, slots in order."""
        cursor = self.runs.find({"status": RunStatus.PENDING}).sort([("status", ASCENDING), ("created_at", ASCENDING)])
        docs = sorted(cursor.limit(limit), key=lambda run: (run["created_at"], run["scheduled_for"], run["_id"]))
        return [run_from_doc(doc) for doc in docs]

    @translated
    def count_pending_runs(self, now: datetime) -> int:
        """Unpublished runs whose slot has come (runs planned ahead of their slot are not)."""
        return self.runs.count_documents({"status": RunStatus.PENDING, "scheduled_for": {"$lte": now}})

    @translated
    def job_positions(self, job_ids: list[str]) -> dict[str, datetime | None]:
        """``next_fire_at`` of each existing job: a slot run before it was committed."""
        return {doc["_id"]: doc.get("next_fire_at") for doc in find_by_ids(self.jobs, job_ids, {"next_fire_at": 1})}

    @translated
    def jobs_by_id(self, job_ids: list[str]) -> dict[str, Job]:
        """The existing jobs among ``job_ids`` (one read per `cronhive.store.base.ID_CHUNK`
        ids): what planned runs are checked against at their instant, and the running
        runs' jobs a reaper pass judges."""
        if not job_ids:
            return {}
        return {doc["_id"]: job_from_doc(doc) for doc in find_by_ids(self.jobs, job_ids)}

    @translated
    def withdraw_planned_run(self, run_id: str, job_id: str, slot: datetime, term: int, *,
                             move_back: Job | None = None, fires_counted: int = 0) -> bool:
        """Withdraw a run planned ahead of its slot that must not be published as planned
        (its job changed, was disabled or deleted, or a maintenance window now holds the
        slot): delete the run while it is still ``pending`` (fenced on ``term``) and free
        the job's lease from its reservation. With ``move_back`` (the job as just read),
        move the job back to the slot by compare-and-set, handing back the
        ``fires_counted`` it counted, so the slot is planned again, at its instant, by
        the job as it is then (a disabled job keeps it as its next slot, as if it had
        never been planned). Whether the run was deleted.

        A job changed again between that read and the move (its revision moved on, its
        next slot did not: no timing change moved it itself) is read again and moved
        back from there: else the slot would have neither a run nor a job waiting for
        it — lost.

        The job is moved back before the run is deleted: a leader dying in between
        leaves a pending run whose job waits for its slot — a draft, which the next
        leader deletes and plans again (the other order would leave neither). The run is
        one this leader planned and has not published, so nobody has started it."""
        if move_back is not None:
            self._move_back(move_back, slot, term, fires_counted)
        query = {"_id": run_id, "status": RunStatus.PENDING, **fenced(term)}
        if self.runs.delete_one(query).deleted_count != 1:
            return False
        self.jobs.update_one({"_id": job_id, "lease.holder": reservation_holder(run_id)}, {"$set": {"lease": None}})
        return True

    def _move_back(self, job: Job, slot: datetime, term: int, fires_counted: int) -> bool:
        """Move ``job`` (as read) back to ``slot`` by compare-and-set on its revision and
        next slot, fenced on ``term``; read again and retried while only its revision
        moved (`MOVE_BACK_ATTEMPTS`). Whether it was moved back."""
        advanced_to = job.next_fire_at
        for _ in range(MOVE_BACK_ATTEMPTS):
            due_at = slot + job.jitter if job.enabled else None
            update: Document = {"$set": {"next_fire_at": slot, "due_at": due_at, "sched_term": term}}
            if fires_counted:
                update["$inc"] = {"fires": -fires_counted}
            if self.jobs.update_one({"_id": job.job_id, "revision": job.revision, "next_fire_at": advanced_to,
                                     **fenced(term)}, update).modified_count == 1:
                return True
            doc = self.jobs.find_one({"_id": job.job_id})
            if doc is None:
                return False  # deleted
            current = job_from_doc(doc)
            if (current.incarnation != job.incarnation or current.next_fire_at != advanced_to
                    or (doc.get("sched_term") or 0) > term):
                return False  # re-created, moved by its own change, or a newer leader's
            job = current
        log.warning("a withdrawn slot's job kept changing; its slot %s was not planned again", slot.isoformat(),
                    extra={"job_id": job.job_id, "term": term})
        return False

    @translated
    def skip_pending_runs(self, run_ids: list[str], error: RunError, now: datetime, term: int) -> int:
        """Record unpublished runs as ``skipped`` with ``error`` (e.g. their job was deleted)."""
        if not run_ids:
            return 0
        update = {"$set": {"status": RunStatus.SKIPPED, "error": error_to_doc(error), "finished_at": now,
                           "sched_term": term}}
        return update_by_ids(self.runs, run_ids, {"status": RunStatus.PENDING, **fenced(term)}, update)

    @translated
    def disable_job(self, job_id: str, revision: int | None, reason: str, now: datetime, term: int) -> bool:
        """Disable a job the scheduler cannot plan any more, with ``disabled_reason``."""
        query = {"_id": job_id, "revision": revision, **fenced(term)}
        update = {"$set": {"enabled": False, "due_at": None, "disabled_reason": reason, "updated_at": now,
                           "sched_term": term}, "$inc": {"revision": 1}}
        doc = self.jobs.find_one_and_update(query, update, return_document=ReturnDocument.BEFORE)
        if doc is None:
            return False
        before = job_from_doc(doc)
        self.repair_head(before, now)
        after = replace(before, enabled=False, due_at=None, disabled_reason=reason, updated_at=now,
                        revision=int(before.revision or 0) + 1)
        self.record_change(definition_of(before), after, SCHEDULER_ACTOR, now)
        return True

    # -- heartbeats and status -----------------------------------------------------

    @translated
    def scheduler_heartbeat(self, beat: Heartbeat, now: datetime, expires_at: datetime) -> None:
        """Upsert one scheduler's heartbeat (read by `scheduler_status`)."""
        self.schedulers.update_one(
            {"_id": beat.holder},
            {"$set": {**heartbeat_set(beat), "seen_at": now, "expires_at": expires_at},
             "$setOnInsert": {"started_at": now}},
            upsert=True,
        )

    @translated
    def remove_scheduler_heartbeat(self, holder: str) -> None:
        self.schedulers.delete_one({"_id": holder})

    @translated
    def scheduler_status(self, now: datetime) -> SchedulerStatus:
        """The leadership at ``now`` (see `SchedulerStatus`): the leader lease as stored
        and the heartbeats not yet expired."""
        lease, term = leases.read_state(self.leases, LeaseScope.NAMED, LEADER_LEASE_ID)
        beats = [beat["_id"] for beat in self.schedulers.find({"expires_at": {"$gt": now}}, projection={"_id": 1})]
        return SchedulerStatus.at(lease, term, beats, now)
