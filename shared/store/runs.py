"""Runs: inserted and read for the API and the trigger, and the writes of the
worker's attempts, the reaper and retention.

Every write an attempt makes about its run is fenced on the run's ``attempt`` and
``lease_token`` (the token of the lease that attempt holds), so a stalled
ex-holder changes nothing; ``attempts`` keeps a record per attempt (the latest
`MAX_ATTEMPT_RECORDS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import OperationFailure

from cronhive.domain import (
    AttemptEnd,
    AttemptFinish,
    AttemptRecord,
    AttemptStart,
    Notification,
    Run,
    RunError,
    RunFilter,
    WaitingSlot,
)
from cronhive.enums import FINAL_RUN_STATUSES, NOT_STARTED, RunStatus, Trigger
from cronhive.errors import RunNotFound
from cronhive.store.base import (
    Document,
    StoreBase,
    delete_by_ids,
    find_by_ids,
    id_chunks,
    insert_new,
    translated,
    update_by_ids,
)
from cronhive.store.documents import (
    OUTPUT_FIELDS,
    attempt_end_set,
    attempt_start_set,
    attempt_to_doc,
    error_to_doc,
    notification_to_doc,
    outbox_update,
    run_filter_query,
    run_from_doc,
    run_to_doc,
)
from cronhive.store.group_commit import Cas, applied, applied_each, cas, holds

MAX_ATTEMPT_RECORDS = 50
RETENTION_INDEX = "retention"
#: Sorting newest first (index "job_history", "by_status", "by_trigger", "recent").
NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]


def _push_attempt(record: AttemptRecord) -> Document:
    return {"attempts": {"$each": [attempt_to_doc(record)], "$slice": -MAX_ATTEMPT_RECORDS}}


def _started(start: AttemptStart) -> Callable[[Mapping[str, Any]], bool]:
    """The proof that this start applied: the run holds its attempt number, token and id."""
    return holds({"status": RunStatus.RUNNING, "attempt": start.number, "lease_token": start.lease.token,
                  "lease_holder": start.lease.holder, "attempt_id": start.attempt_id})


def _finish_cas(finish: AttemptFinish) -> Cas:
    end = finish.end
    expected = {"status": RunStatus.RUNNING, "attempt": finish.attempt, "lease_token": finish.token}
    outbox_set, outbox_push = outbox_update(end.notifications, end.finished_at)
    update = {"$set": {**attempt_end_set(end), **outbox_set},
              "$push": {**_push_attempt(finish.record), **outbox_push}}
    proof = holds({"status": end.status, "attempt": finish.attempt, "lease_token": finish.token})
    return cas(finish.run_id, expected, update, proof)


def waiting_slot_runs(job_id: str | Document, trigger: Trigger) -> Document:
    """The filter of the slot runs of ``trigger`` of ``job_id`` (an id, or a condition on
    it) that have not started yet."""
    return {"job_id": job_id, "trigger": str(trigger), "status": {"$in": [str(status) for status in NOT_STARTED]}}


class RunStore(StoreBase):
    """The ``runs`` collection."""

    MAX_ATTEMPT_RECORDS = MAX_ATTEMPT_RECORDS
    RETENTION_INDEX = RETENTION_INDEX

    # -- the API and the trigger ---------------------------------------------------

    @translated
    def insert_run(self, run: Run) -> None:
        self.runs.insert_one(run_to_doc(run))

    @translated
    def get_run(self, run_id: str) -> Run:
        doc = self.runs.find_one({"_id": run_id})
        if doc is None:
            raise RunNotFound(f"run {run_id!r} not found", details={"run_id": run_id})
        return run_from_doc(doc)

    @translated
    def find_run(self, run_id: str) -> Run | None:
        doc = self.runs.find_one({"_id": run_id})
        return run_from_doc(doc) if doc is not None else None

    @translated
    def older_waiting_slots(self, job_id: str, before: datetime, limit: int,
                            trigger: Trigger = Trigger.SCHEDULE) -> int:
        """How many (up to ``limit``) of the job's slot runs of ``trigger`` (its schedule's,
        or a backfill's) before ``before`` have not started yet (index "slot_key", or
        "backfill_key")."""
        query = {**waiting_slot_runs(job_id, trigger), "scheduled_for": {"$lt": before}}
        return self.runs.count_documents(query, limit=limit)

    @translated
    def oldest_waiting_slots(self, job_ids: list[str]) -> dict[str, datetime]:
        """The slot of each job's oldest schedule run that has not started (jobs with none
        are absent): one aggregate per `cronhive.store.base.ID_CHUNK` jobs (index "slot_key")."""
        oldest: dict[str, datetime] = {}
        for chunk in id_chunks(job_ids):
            pipeline: list[Document] = [
                {"$match": waiting_slot_runs({"$in": chunk}, Trigger.SCHEDULE)},
                {"$group": {"_id": "$job_id", "oldest": {"$min": "$scheduled_for"}}},
            ]
            oldest.update({doc["_id"]: doc["oldest"] for doc in self.runs.aggregate(pipeline)})
        return oldest

    @translated
    def waiting_slot_queues(self, before: datetime, scan: int) -> dict[str, list[WaitingSlot]]:
        """The schedule runs not started whose slot is before ``before``, by job, oldest
        slot first (a job's first is the head of its queue of slots). Looks at the
        ``scan`` oldest runs not started (index "by_status"); the grouping is done here,
        as SecantusDB scans the collection for a ``$match`` on more than ``status`` (a
        ``find`` by status: 27 ms for 928 such runs among 20,000; an aggregate matching
        the trigger and the slot too: 450 ms)."""
        queues: dict[str, list[WaitingSlot]] = {}
        statuses = [str(status) for status in NOT_STARTED]
        cursor = self.runs.find({"status": {"$in": statuses}},
                                {"job_id": 1, "trigger": 1, "scheduled_for": 1, "created_at": 1})
        for doc in cursor.sort([("status", ASCENDING), ("created_at", ASCENDING)]).limit(scan):
            slot = doc.get("scheduled_for")
            if doc.get("trigger") != Trigger.SCHEDULE or slot is None or slot >= before:
                continue
            queues.setdefault(doc["job_id"], []).append(WaitingSlot(doc["_id"], slot, doc["created_at"]))
        for waiting in queues.values():
            waiting.sort(key=lambda run: (run.slot, run.run_id))
        return queues

    @translated
    def oldest_waiting_slot(self, job_id: str, trigger: Trigger) -> WaitingSlot | None:
        """The job's oldest slot run of ``trigger`` that has not started (index "slot_key"
        or "backfill_key"), or None."""
        doc = self.runs.find_one(waiting_slot_runs(job_id, trigger), {"_id": 1, "scheduled_for": 1, "created_at": 1},
                                 sort=[("scheduled_for", ASCENDING)])
        if doc is None:
            return None
        return WaitingSlot(doc["_id"], doc["scheduled_for"], doc["created_at"])

    @translated
    def list_runs(self, job_id: str, page: int, limit: int, incarnation: str | None, *,
                  trigger: Trigger | None = None) -> tuple[list[Run], int]:
        """A job's runs, newest first (index "job_history"), of one ``trigger`` when given:
        those of its ``incarnation`` (`Job.incarnation`), never a deleted job's of the same
        id."""
        query = {**run_filter_query(RunFilter(job_id=job_id, trigger=trigger)), "job_incarnation": incarnation}
        return self._runs_page(query, page, limit)

    @translated
    def search_runs(self, where: RunFilter, page: int, limit: int) -> tuple[list[Run], int]:
        """Runs across jobs, newest first (by ``created_at``, then id): one page and the
        total matching (indexes "job_history", "by_status", "by_trigger", "recent")."""
        return self._runs_page(run_filter_query(where), page, limit)

    def _runs_page(self, query: Document, page: int, limit: int) -> tuple[list[Run], int]:
        """One page of runs, newest first, without their ``log`` (shown by `get_run` only: a
        page of runs stays light), and the total matching."""
        total = self.runs.count_documents(query)
        cursor = self.runs.find(query, {"log": 0}).sort(NEWEST_FIRST).skip((page - 1) * limit).limit(limit)
        return [run_from_doc(doc) for doc in cursor], total

    # -- backfills -------------------------------------------------------------------

    @translated
    def slot_outcomes(self, job_id: str, start: datetime, end: datetime) -> dict[datetime, set[RunStatus]]:
        """The statuses of the job's schedule and backfill runs per slot in ``[start, end)``
        (indexes "slot_key" and "backfill_key")."""
        outcomes: dict[datetime, set[RunStatus]] = {}
        for trigger in (Trigger.SCHEDULE, Trigger.BACKFILL):
            query = {"job_id": job_id, "trigger": str(trigger), "scheduled_for": {"$gte": start, "$lt": end}}
            for doc in self.runs.find(query, {"scheduled_for": 1, "status": 1}):
                outcomes.setdefault(doc["scheduled_for"], set()).add(RunStatus(doc["status"]))
        return outcomes

    @translated
    def insert_backfill_runs(self, runs: list[Run]) -> list[Run]:
        """Insert a backfill's runs in one unordered ``insert_many``; returns those inserted
        (a slot that already has its backfill run keeps it: unique "backfill_key")."""
        existing = insert_new(self.runs, [run_to_doc(run) for run in runs])
        return [run for index, run in enumerate(runs) if index not in existing]

    @translated
    def mark_many_queued(self, run_ids: list[str], now: datetime) -> int:
        """``pending`` → ``queued`` (``queued_at`` = ``now``) for many runs the broker
        confirmed, in one command (as the scheduler marks its runs; a run a worker
        started meanwhile keeps its status)."""
        if not run_ids:
            return 0
        return update_by_ids(self.runs, run_ids, {"status": RunStatus.PENDING},
                             {"$set": {"status": RunStatus.QUEUED, "queued_at": now}})

    # -- cancel ------------------------------------------------------------------------

    @translated
    def cancel_unstarted_run(self, seen: Run, error: RunError, now: datetime) -> bool:
        """Record a run that has not started (``pending``, ``queued``, a retry waiting)
        ``cancelled``, by compare-and-set on what was read: False when an attempt started
        (or the run ended) meanwhile."""
        query = {"_id": seen.run_id, "status": {"$in": list(NOT_STARTED)}, "attempt": seen.attempt,
                 "lease_token": seen.lease_token}
        update = {"$set": {"status": RunStatus.CANCELLED, "finished_at": now, "error": error_to_doc(error),
                           "retry_at": None, "cancel_requested": True}}
        return self.runs.update_one(query, update).modified_count == 1

    @translated
    def request_cancel(self, seen: Run, now: datetime) -> bool:
        """Ask the running attempt of ``seen`` to stop (its worker polls the flag)."""
        query = {"_id": seen.run_id, "status": RunStatus.RUNNING, "attempt": seen.attempt,
                 "lease_token": seen.lease_token}
        update = {"$set": {"cancel_requested": True, "cancel_requested_at": now}}
        return self.runs.update_one(query, update).modified_count == 1

    @translated
    def cancel_requested_among(self, run_ids: list[str]) -> set[str]:
        """Which of these runs (running here) were asked to stop."""
        if not run_ids:
            return set()
        return {doc["_id"] for doc in find_by_ids(self.runs, run_ids, {"_id": 1}, {"cancel_requested": True})}

    @translated
    def mark_run_queued(self, run_id: str, now: datetime) -> bool:
        """``pending`` → ``queued`` once the broker confirmed the publish.

        A worker may already have started (or finished) the run by then: its
        status is kept, and ``queued_at`` is filled in either way.
        """
        result = self.runs.update_one(
            {"_id": run_id, "queued_at": None},
            [{"$set": {
                "status": {"$cond": [{"$eq": ["$status", RunStatus.PENDING]}, RunStatus.QUEUED, "$status"]},
                "queued_at": now,
            }}],
        )
        return result.modified_count == 1

    @translated
    def delete_run(self, run_id: str) -> None:
        self.runs.delete_one({"_id": run_id})

    # -- the worker's attempts -----------------------------------------------------

    @translated
    def start_run_attempt(self, seen: Run, start: AttemptStart, dead_attempt: AttemptRecord | None = None) -> bool:
        """Mark the run ``running`` for ``start`` only if it is still exactly as read in
        ``seen`` (status, attempt, token): of several deliveries racing to start the
        same attempt, one wins. ``dead_attempt`` records the attempt it replaces."""
        # pending and queued both mean "not started": the scheduler marking the run
        # queued between the read and this write must not make the start lose the race
        expected: Document = {
            "status": {"$in": list(NOT_STARTED)} if seen.status in NOT_STARTED else seen.status,
            "attempt": seen.attempt,
            "lease_token": seen.lease_token,
        }
        update: Document = {"$set": attempt_start_set(start)}
        if dead_attempt is not None:
            update["$push"] = _push_attempt(dead_attempt)
        if seen.output.output is not None or seen.output.log is not None:  # a previous attempt's
            update["$unset"] = dict.fromkeys(OUTPUT_FIELDS, "")
        return applied(self.runs, cas(seen.run_id, expected, update, _started(start)))

    @translated
    def start_reserved_run(self, run_id: str, reserved_token: int | None, start: AttemptStart,
                           job_revision: int | None) -> bool:
        """Mark a run that was never started ``running`` for its first attempt ``start``,
        without having read it: only if it is still not started, attempt 0, with the
        reservation token ``reserved_token`` it was published with (None: a run made
        without one, whose reservation a hand-on made since, `JobStore.hand_on_recording`),
        and its job still at ``job_revision`` (`Run.job_revision`: a job change since sets
        it to None). The worker's path for a message carrying its job's snapshot
        (`cronhive.snapshots`), whose attempt holds the job lease as the reservation made it."""
        expected: Document = {"status": {"$in": list(NOT_STARTED)}, "attempt": 0, "lease_token": reserved_token,
                              "job_revision": job_revision}
        return applied(self.runs, cas(run_id, expected, {"$set": attempt_start_set(start)}, _started(start)))

    @translated
    def finish_run_attempt(self, run_id: str, attempt: int, token: int | None, end: AttemptEnd,
                           record: AttemptRecord) -> bool:
        """Write the end of ``attempt`` (a final status, or ``queued`` for a retry), fenced:
        False when the run no longer belongs to that attempt (late write rejected)."""
        return applied(self.runs, _finish_cas(AttemptFinish(run_id, attempt, token, end, record)))

    @translated
    def finish_run_attempts(self, finishes: Sequence[AttemptFinish]) -> list[bool]:
        """`finish_run_attempt` of each of ``finishes`` (distinct runs), in one batch of
        the store's group commit: whether each applied."""
        return applied_each(self.runs, [_finish_cas(finish) for finish in finishes])

    @translated
    def fail_unstarted_run(self, run_id: str, error: RunError, now: datetime) -> bool:
        """A run that never started becomes ``failed`` with ``error``, no attempt made
        (its job cannot run: handler unknown to every worker, invalid document)."""
        result = self.runs.update_one(
            {"_id": run_id, "status": {"$in": list(NOT_STARTED)}},
            {"$set": {"status": RunStatus.FAILED, "finished_at": now, "error": error_to_doc(error),
                      "retry_at": None}},
        )
        return result.modified_count == 1

    @translated
    def skip_run(self, run_id: str, error: RunError, now: datetime,
                 notifications: tuple[Notification, ...] = ()) -> bool:
        """A run that never started becomes ``skipped`` (e.g. ``forbid``: another run holds the
        lease), with the notifications that raises in the same update."""
        outbox_set, outbox_push = outbox_update(notifications, now)
        update: Document = {"$set": {"status": RunStatus.SKIPPED, "finished_at": now, "error": error_to_doc(error),
                                     **outbox_set}}
        if outbox_push:
            update["$push"] = outbox_push
        result = self.runs.update_one({"_id": run_id, "status": {"$in": list(NOT_STARTED)}}, update)
        return result.modified_count == 1

    # -- the notification outbox (`cronhive.worker.notify`) --------------------------

    @translated
    def due_notifications(self, now: datetime, limit: int) -> list[Run]:
        """Runs with a notification to deliver at ``now``, most overdue first (index "notify_due")."""
        cursor = self.runs.find({"notify_due": {"$lte": now}}).sort("notify_due", ASCENDING).limit(limit)
        return [run_from_doc(doc) for doc in cursor]

    @translated
    def claim_notifications(self, run: Run, until: datetime) -> bool:
        """Take the run's pending notifications until ``until`` (the claim: ``notify_due``
        moved there, by compare-and-set on its value as read). A deliverer that dies
        lets the claim run out; another then delivers them again (at least once)."""
        query = {"_id": run.run_id, "notify_due": run.notify_due}
        return self.runs.update_one(query, {"$set": {"notify_due": until}}).modified_count == 1

    @translated
    def record_deliveries(self, run_id: str, claimed_until: datetime, notifications: tuple[Notification, ...],
                          next_due: datetime | None) -> bool:
        """Write how the claimed deliveries went and when to look again (None: all done),
        only while the claim is still this deliverer's."""
        update: Document = {"$set": {"notifications": [notification_to_doc(item) for item in notifications]}}
        if next_due is None:
            update["$unset"] = {"notify_due": ""}
        else:
            update["$set"]["notify_due"] = next_due
        query = {"_id": run_id, "notify_due": claimed_until}
        return self.runs.update_one(query, update).modified_count == 1

    # -- the reaper and retention --------------------------------------------------

    @translated
    def running_runs(self, limit: int) -> list[Run]:
        """The oldest ``running`` runs (index "by_status")."""
        cursor = self.runs.find({"status": RunStatus.RUNNING}).sort([("status", ASCENDING), ("created_at", ASCENDING)])
        return [run_from_doc(doc) for doc in cursor.limit(limit)]

    @translated
    def note_recovery(self, run_id: str, attempt: int, token: int | None, now: datetime,
                      again_after: timedelta) -> bool:
        """Record that a dead attempt's run is being re-published: once per attempt, or
        again when the last re-publish is older than ``again_after`` (it was lost)."""
        result = self.runs.update_one(
            {"_id": run_id, "status": RunStatus.RUNNING, "attempt": attempt, "lease_token": token,
             "$or": [{"recovery_for": {"$ne": attempt}}, {"recovery_at": {"$lt": now - again_after}}]},
            {"$set": {"recovery_for": attempt, "recovery_at": now}},
        )
        return result.modified_count == 1

    @translated
    def ensure_run_retention(self, days: int) -> None:
        """A TTL index removing runs ``days`` after ``created_at`` (changed in place when
        RUN_HISTORY_DAYS changes). Workers also sweep (`delete_runs_created_before`), for
        servers whose TTL monitor is off."""
        seconds = days * 86400
        try:
            self.runs.create_index([("created_at", ASCENDING)], name=RETENTION_INDEX, expireAfterSeconds=seconds)
        except OperationFailure:
            self.db.command({"collMod": "runs", "index": {"name": RETENTION_INDEX, "expireAfterSeconds": seconds}})

    @translated
    def trim_run_history(self, job_id: str, keep: int) -> int:
        """Delete the job's finished runs older than its ``keep`` newest (index "job_history":
        reads at most ``keep`` + 1 index entries, never all runs)."""
        order = [("created_at", DESCENDING), ("_id", DESCENDING)]
        boundary = next(iter(self.runs.find({"job_id": job_id}, {"created_at": 1}).sort(order).skip(keep).limit(1)), None)
        if boundary is None:
            return 0
        older = {"$or": [{"created_at": {"$lt": boundary["created_at"]}},
                         {"created_at": boundary["created_at"], "_id": {"$lte": boundary["_id"]}}]}
        # a run whose notifications are still being delivered stays until they are
        query = {"job_id": job_id, "status": {"$in": sorted(FINAL_RUN_STATUSES)}, "notify_due": None, **older}
        return self.runs.delete_many(query).deleted_count

    @translated
    def delete_runs_created_before(self, cutoff: datetime, batch: int) -> int:
        """Delete up to ``batch`` runs created before ``cutoff`` (index "retention")."""
        ids = [doc["_id"] for doc in self.runs.find({"created_at": {"$lt": cutoff}}, {"_id": 1}).limit(batch)]
        if not ids:
            return 0
        return delete_by_ids(self.runs, ids, {})
