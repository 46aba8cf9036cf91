"""The MongoDB store: jobs, runs and leases, with domain errors.

Relies only on features of MongoDB 4.2+ standalone servers (tested against
MongoDB-wire SecantusDB; production targets MongoDB 7+): single-document atomic
updates (some as update pipelines, never comparing with ``$$NOW``), ``find_one_and_update``, unique and
compound indexes, ``count_documents``. No transactions, no change streams.

Every pymongo connectivity failure becomes `StoreUnavailable` (503 in the API);
duplicate keys become domain conflicts; unknown ids become `NotFound`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError

from cronhive import cron, leases
from cronhive.domain import DEFAULT_POLICIES, format_instant, jitter_offset, job_id_for_name
from cronhive.enums import FINAL_RUN_STATUSES, NOT_STARTED, JobStatus, LeaseScope, RunStatus, Trigger
from cronhive.errors import Conflict, DuplicateJob, JobNotFound, RunNotFound, StoreUnavailable
from cronhive.leases import Lease
from cronhive.settings import Settings, redact_url
from cronhive.slots import JobAdvance

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

MAX_GENERATED_ID_ATTEMPTS = 50
MAX_UPDATE_ATTEMPTS = 10
#: The leader lease document (in ``leases``) and the scheduler heartbeat collection.
LEADER_LEASE_ID = "scheduler"
SCHEDULERS = "schedulers"
#: A slot run an earlier leader wrote but never committed is still one of these.
DRAFT_STATUSES = [RunStatus.PENDING, RunStatus.SKIPPED]


def _pid_of(holder: str | None) -> int | None:
    if not holder:
        return None
    try:
        return int(holder.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


@contextmanager
def translate_errors(uri: str = "") -> Iterator[None]:
    """Turn pymongo's connectivity errors into `StoreUnavailable`."""
    try:
        yield
    except (ServerSelectionTimeoutError, ConnectionFailure) as exc:
        where = f" at {redact_url(uri)}" if uri else ""
        raise StoreUnavailable(f"MongoDB is unreachable{where}") from exc


def _translated(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        self = args[0]
        with translate_errors(getattr(self, "uri", "")):
            return method(*args, **kwargs)

    return wrapper


def schedule_state(doc: dict[str, Any], after: datetime) -> dict[str, Any]:
    """``next_fire_at``/``due_at`` for a job, computed from the instant ``after``."""
    if not doc.get("enabled"):
        return {"due_at": None}
    next_fire = cron.next_fire(doc["schedule"], doc.get("timezone", "UTC"), after)
    return {
        "next_fire_at": next_fire,
        "due_at": next_fire + jitter_offset(doc["_id"], int(doc.get("jitter_s") or 0)),
    }


def job_update(current: dict[str, Any], changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The ``$set`` of an API update of the job ``current`` (see `MongoStore.update_job`)."""
    merged = {**current, **changes}
    update: dict[str, Any] = {**changes, "updated_at": now}
    timing_changed = any(
        key in changes and changes[key] != current.get(key) for key in ("schedule", "timezone", "jitter_s")
    )
    if not merged.get("enabled"):
        update["due_at"] = None
        if timing_changed:
            # the old schedule's slot means nothing now; re-enabling waits for the new one
            update["next_fire_at"] = cron.next_fire(merged["schedule"], merged.get("timezone", "UTC"), now)
    elif timing_changed or current.get("next_fire_at") is None:
        update.update(schedule_state(merged, now))
        update["disabled_reason"] = None
    elif not current.get("enabled"):
        # re-enabled: the slot it was waiting for (maybe long past) becomes due again
        update["due_at"] = current["next_fire_at"] + jitter_offset(current["_id"], int(merged.get("jitter_s") or 0))
        update["disabled_reason"] = None
    return update


class MongoStore:
    """Access to cronhive's collections. Create with `open`, close with `close`."""

    def __init__(self, client: MongoClient, db_name: str, *, owns_client: bool, uri: str = "") -> None:
        self.client = client
        self.db: Database = client[db_name]
        self.jobs: Collection = self.db["jobs"]
        self.runs: Collection = self.db["runs"]
        self.leases: Collection = self.db["leases"]
        self.owns_client = owns_client
        self.uri = uri

    @classmethod
    def open(cls, settings: Settings, **client_options: Any) -> MongoStore:
        """A store on a new client (closed by `close`). Does not block on connecting."""
        client: MongoClient = MongoClient(
            settings.mongodb_uri,
            tz_aware=True,
            serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
            connectTimeoutMS=settings.mongodb_timeout_ms,
            socketTimeoutMS=max(settings.mongodb_timeout_ms * 3, 10_000),
            appname="cronhive",
            **client_options,
        )
        return cls(client, settings.mongodb_db, owns_client=True, uri=settings.mongodb_uri)

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    # -- lifecycle ------------------------------------------------------------

    @_translated
    def ensure_indexes(self) -> None:
        """Create every index the store's queries rely on (idempotent)."""
        self.jobs.create_index([("created_at", ASCENDING), ("_id", ASCENDING)], name="created_order")
        self.jobs.create_index([("due_at", ASCENDING)], name="due")
        self.jobs.create_index([("handler", ASCENDING), ("created_at", ASCENDING)], name="by_handler")
        self.runs.create_index([("job_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)], name="job_history")
        self.runs.create_index(
            [("job_id", ASCENDING), ("scheduled_for", ASCENDING)],
            name="slot_key",
            unique=True,
            partialFilterExpression={"trigger": Trigger.SCHEDULE.value},
        )
        self.runs.create_index([("status", ASCENDING), ("created_at", ASCENDING)], name="by_status")

    @_translated
    def ping(self) -> None:
        self.client.admin.command("ping")

    # -- jobs -----------------------------------------------------------------

    @_translated
    def create_job(self, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Insert a job. ``fields`` are validated API fields; ``job_id`` optional.

        A given ``job_id`` that exists raises `DuplicateJob`; a generated one
        (``job_`` + slug of the name) gets a numeric suffix until unique.
        """
        given_id = fields.get("job_id")
        base = {
            "name": fields["name"],
            "schedule": fields["schedule"],
            "timezone": fields.get("timezone") or "UTC",
            "handler": fields["handler"],
            "args": fields.get("args") or {},
            "enabled": fields.get("enabled", True),
            **{key: fields.get(key, default) for key, default in DEFAULT_POLICIES.items()},
            "created_at": now,
            "updated_at": now,
            "revision": 1,
            "next_fire_at": None,
            "due_at": None,
            "last_triggered_at": None,
            "last_run_id": None,
            "last_run_status": None,
            "last_run_duration_ms": None,
            "lease": None,
            "lease_term": 0,
            "disabled_reason": None,
            "buffered_run_id": None,
        }
        for attempt in range(MAX_GENERATED_ID_ATTEMPTS):
            job_id = given_id or job_id_for_name(fields["name"], attempt)
            doc = {"_id": job_id, **base}
            doc.update(schedule_state(doc, now))
            try:
                self.jobs.insert_one(doc)
                return doc
            except DuplicateKeyError:
                if given_id:
                    raise DuplicateJob(f"job_id {job_id!r} already exists", details={"job_id": job_id}) from None
        raise DuplicateJob(f"could not generate a unique job_id for {fields['name']!r}")

    @_translated
    def get_job(self, job_id: str) -> dict[str, Any]:
        doc = self.jobs.find_one({"_id": job_id})
        if doc is None:
            raise JobNotFound(f"job {job_id!r} not found", details={"job_id": job_id})
        return doc

    @_translated
    def list_jobs(
        self, page: int, limit: int, *, status: str | None = None, handler: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """One page in creation order (then id), and the total matching."""
        query: dict[str, Any] = {}
        if status is not None:
            query["enabled"] = status == JobStatus.ACTIVE
        if handler is not None:
            query["handler"] = handler
        total = self.jobs.count_documents(query)
        cursor = (
            self.jobs.find(query)
            .sort([("created_at", ASCENDING), ("_id", ASCENDING)])
            .skip((page - 1) * limit)
            .limit(limit)
        )
        return list(cursor), total

    @_translated
    def update_job(self, job_id: str, changes: dict[str, Any], now: datetime) -> dict[str, Any]:
        """Apply a partial update; recompute the next slot when the timing changed.

        A changed schedule, time zone or jitter takes effect from the next slot
        after ``now``. Disabling clears ``due_at`` but keeps ``next_fire_at``, so
        re-enabling lets the scheduler apply the misfire policy to what was missed.
        """
        # optimistic concurrency: the update applies only to the revision it was computed from
        for _ in range(MAX_UPDATE_ATTEMPTS):
            current = self.get_job(job_id)
            doc = self.jobs.find_one_and_update(
                {"_id": job_id, "revision": current.get("revision")},
                {"$set": job_update(current, changes, now), "$inc": {"revision": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return doc
        raise Conflict(f"job {job_id!r} is being changed concurrently; retry", details={"job_id": job_id})

    @_translated
    def delete_job(self, job_id: str) -> None:
        """Remove a job; its run history stays until retention removes it."""
        if self.jobs.delete_one({"_id": job_id}).deleted_count == 0:
            raise JobNotFound(f"job {job_id!r} not found", details={"job_id": job_id})

    # -- runs -----------------------------------------------------------------

    @_translated
    def insert_run(self, run: dict[str, Any]) -> None:
        self.runs.insert_one(run)

    @_translated
    def get_run(self, run_id: str) -> dict[str, Any]:
        doc = self.runs.find_one({"_id": run_id})
        if doc is None:
            raise RunNotFound(f"run {run_id!r} not found", details={"run_id": run_id})
        return doc

    @_translated
    def list_runs(self, job_id: str, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A job's runs, newest first."""
        query = {"job_id": job_id}
        total = self.runs.count_documents(query)
        cursor = (
            self.runs.find(query)
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .skip((page - 1) * limit)
            .limit(limit)
        )
        return list(cursor), total

    @_translated
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

    @_translated
    def delete_run(self, run_id: str) -> None:
        self.runs.delete_one({"_id": run_id})

    @_translated
    def note_triggered(self, job_id: str, at: datetime) -> None:
        self.jobs.update_one({"_id": job_id}, {"$max": {"last_triggered_at": at}})

    @_translated
    def reserve_buffer_slot(self, job_id: str, run_id: str) -> bool:
        """``buffer_one``: make ``run_id`` the one run waiting for the lease, if none waits."""
        result = self.jobs.update_one({"_id": job_id, "buffered_run_id": None}, {"$set": {"buffered_run_id": run_id}})
        return result.modified_count == 1

    @_translated
    def clear_buffer_slot(self, job_id: str, run_id: str) -> None:
        self.jobs.update_one({"_id": job_id, "buffered_run_id": run_id}, {"$set": {"buffered_run_id": None}})

    # -- job leases -----------------------------------------------------------

    @_translated
    def claim_job_lease(
        self,
        job_id: str,
        holder: str,
        duration_s: float,
        now: datetime,
        *,
        run_id: str | None = None,
        mine: tuple[str, ...] = (),
        extra_set: dict[str, Any] | None = None,
        seen: dict[str, Any] | None = None,
    ) -> Lease | None:
        """Claim the job's run lease (free, expired at ``now``, or ``mine``); None when held by another.
        ``seen``: the job document just read — then `leases.claim_as_read` (an indexed
        compare-and-set instead of a find-and-modify) unless ``extra_set`` is given."""
        if seen is not None and extra_set is None:
            return leases.claim_as_read(self.jobs, seen, holder, int(duration_s * 1000), now, run_id=run_id, mine=mine)
        return leases.claim(
            self.jobs, job_id, holder, int(duration_s * 1000), now, run_id=run_id, mine=mine, extra_set=extra_set
        )

    @_translated
    def renew_job_lease(self, lease: Lease, duration_s: float, now: datetime) -> Lease | None:
        return leases.renew(self.jobs, lease, int(duration_s * 1000), now)

    @_translated
    def release_job_lease(self, lease: Lease, extra_set: dict[str, Any] | None = None) -> bool:
        return leases.release(self.jobs, lease, extra_set)

    # -- runs (worker) ----------------------------------------------------------
    # Written by the worker processes (worker/). Every write an attempt makes
    # about its run is fenced on the run's ``attempt`` and ``lease_token`` (the
    # token of the lease that attempt holds), and every write on the job under
    # the job lease filters on `leases.lease_filter`, so a stalled ex-holder
    # changes nothing. Runs of ``allow`` jobs take no job lease; they carry their
    # own (``lease``/``lease_term`` on the run document) so that one run still has
    # at most one executing attempt. ``attempts`` keeps a record per attempt.

    MAX_ATTEMPT_RECORDS = 50
    RETENTION_INDEX = "retention"

    @_translated
    def find_job(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.find_one({"_id": job_id})

    @_translated
    def find_run(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.find_one({"_id": run_id})

    @_translated
    def claim_run_lease(
        self, run_id: str, holder: str, duration_s: float, now: datetime, *, mine: tuple[str, ...] = (),
        seen: dict[str, Any] | None = None,
    ) -> Lease | None:
        """The run's own lease (``allow`` jobs): free, expired at ``now`` or ``mine``; None when held.
        ``seen``: the run document just read (see `claim_job_lease`)."""
        if seen is not None:
            return leases.claim_as_read(self.runs, seen, holder, int(duration_s * 1000), now, run_id=run_id, mine=mine)
        return leases.claim(self.runs, run_id, holder, int(duration_s * 1000), now, run_id=run_id, mine=mine)

    @_translated
    def renew_run_lease(self, lease: Lease, duration_s: float, now: datetime) -> Lease | None:
        return leases.renew(self.runs, lease, int(duration_s * 1000), now)

    @_translated
    def release_run_lease(self, lease: Lease) -> bool:
        return leases.release(self.runs, lease)

    @_translated
    def hand_over_lease(self, scope: str, lease: Lease, holder: str, until: datetime) -> bool:
        """Pass a held lease (same token) to ``holder`` until ``until``, e.g. back to the
        run's reservation while its retry waits out the backoff. ``scope``: job | run."""
        coll = self.runs if scope == LeaseScope.RUN else self.jobs
        update = {"$set": {"lease.holder": holder, "lease.expires_at": until}}
        return coll.update_one(leases.lease_filter(lease), update).modified_count == 1

    @_translated
    def start_run_attempt(
        self, run_id: str, seen: dict[str, Any], fields: dict[str, Any], dead_attempt: dict[str, Any] | None = None
    ) -> bool:
        """Mark the run ``running`` (``fields``) only if it is still exactly as read in
        ``seen`` (status, attempt, token): of several deliveries racing to start the
        same attempt, one wins. ``dead_attempt`` records the attempt it replaces."""
        # pending and queued both mean "not started": the scheduler marking the run
        # queued between the read and this write must not make the start lose the race
        status = seen["status"]
        query = {
            "_id": run_id,
            "status": {"$in": list(NOT_STARTED)} if status in NOT_STARTED else status,
            "attempt": seen.get("attempt", 0),
            "lease_token": seen.get("lease_token"),
        }
        update: dict[str, Any] = {"$set": fields}
        if dead_attempt is not None:
            update["$push"] = {"attempts": {"$each": [dead_attempt], "$slice": -self.MAX_ATTEMPT_RECORDS}}
        return self.runs.update_one(query, update).modified_count == 1

    @_translated
    def finish_run_attempt(
        self, run_id: str, attempt: int, token: int | None, fields: dict[str, Any], record: dict[str, Any]
    ) -> bool:
        """Write the end of ``attempt`` (final status, or ``queued`` for a retry), fenced:
        False when the run no longer belongs to that attempt (late write rejected)."""
        query = {"_id": run_id, "status": RunStatus.RUNNING, "attempt": attempt, "lease_token": token}
        update = {"$set": fields, "$push": {"attempts": {"$each": [record], "$slice": -self.MAX_ATTEMPT_RECORDS}}}
        return self.runs.update_one(query, update).modified_count == 1

    @_translated
    def skip_run(self, run_id: str, error: dict[str, Any], now: datetime) -> bool:
        """A run that never started becomes ``skipped`` (e.g. ``forbid``: another run holds the lease)."""
        result = self.runs.update_one(
            {"_id": run_id, "status": {"$in": list(NOT_STARTED)}},
            {"$set": {"status": RunStatus.SKIPPED, "finished_at": now, "error": error}},
        )
        return result.modified_count == 1

    @_translated
    def record_job_outcome(
        self, job_id: str, run_id: str, status: str, duration_ms: int | None, lease: Lease | None
    ) -> bool:
        """The job's ``last_run_*``; under a job lease, released in the same update
        (filtered on its holder and token, so only the holder can)."""
        outcome = {"last_run_id": run_id, "last_run_status": status, "last_run_duration_ms": duration_ms}
        if lease is None:
            return self.jobs.update_one({"_id": job_id}, {"$set": outcome}).modified_count == 1
        return leases.release(self.jobs, lease, extra_set=outcome)

    @_translated
    def running_runs(self, limit: int) -> list[dict[str, Any]]:
        """The oldest ``running`` runs (index "by_status")."""
        cursor = self.runs.find({"status": RunStatus.RUNNING}).sort([("status", ASCENDING), ("created_at", ASCENDING)])
        return list(cursor.limit(limit))

    @_translated
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

    @_translated
    def claim_named_lease(self, name: str, holder: str, duration_s: float, now: datetime) -> Lease | None:
        """A lease document ``name`` in ``leases`` (created on first claim), e.g. the workers' reaper."""
        return leases.claim(self.leases, name, holder, int(duration_s * 1000), now, upsert=True)

    @_translated
    def ensure_run_retention(self, days: int) -> None:
        """A TTL index removing runs ``days`` after ``created_at`` (changed in place when
        RUN_HISTORY_DAYS changes). Workers also sweep (`delete_runs_created_before`), for
        servers whose TTL monitor is off."""
        from pymongo.errors import OperationFailure

        seconds = days * 86400
        try:
            self.runs.create_index([("created_at", ASCENDING)], name=self.RETENTION_INDEX, expireAfterSeconds=seconds)
        except OperationFailure:
            self.db.command({"collMod": "runs", "index": {"name": self.RETENTION_INDEX, "expireAfterSeconds": seconds}})

    @_translated
    def trim_run_history(self, job_id: str, keep: int) -> int:
        """Delete the job's finished runs older than its ``keep`` newest (index "job_history":
        reads at most ``keep`` + 1 index entries, never all runs)."""
        order = [("created_at", DESCENDING), ("_id", DESCENDING)]
        boundary = next(iter(self.runs.find({"job_id": job_id}, {"created_at": 1}).sort(order).skip(keep).limit(1)), None)
        if boundary is None:
            return 0
        older = {"$or": [{"created_at": {"$lt": boundary["created_at"]}},
                         {"created_at": boundary["created_at"], "_id": {"$lte": boundary["_id"]}}]}
        query = {"job_id": job_id, "status": {"$in": list(FINAL_RUN_STATUSES)}, **older}
        return self.runs.delete_many(query).deleted_count

    @_translated
    def delete_runs_created_before(self, cutoff: datetime, batch: int) -> int:
        """Delete up to ``batch`` runs created before ``cutoff`` (index "retention")."""
        ids = [doc["_id"] for doc in self.runs.find({"created_at": {"$lt": cutoff}}, {"_id": 1}).limit(batch)]
        if not ids:
            return 0
        return self.runs.delete_many({"_id": {"$in": ids}}).deleted_count

    # -- scheduler ----------------------------------------------------------------
    # Written by the leader scheduler (scheduler/), read by nobody else but the API.
    # Fencing: every write the leader makes carries its term (the leader lease's
    # token). Job writes filter on ``sched_term`` not above the term and set it, so
    # once a newer leader has written a job an older one can no longer; run writes
    # record the term (``sched_term``) and re-publishing adopts a run into the term.
    # Job advances are also compare-and-set on what was read (`JobAdvance.expect`).

    _EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")

    @staticmethod
    def _fenced(term: int) -> dict[str, Any]:
        """Matches documents no leader newer than ``term`` has written (or none at all)."""
        return {"sched_term": {"$not": {"$gt": term}}}

    @_translated
    def due_jobs(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Jobs due at ``now``, earliest first (index "due": a range scan, no ``$or``), without
        the fields planning does not read (``args``, ``name``)."""
        cursor = self.jobs.find({"due_at": {"$lte": now}}, {"args": 0, "name": 0})
        return list(cursor.sort("due_at", ASCENDING).limit(limit))

    @_translated
    def earliest_due_at(self) -> datetime | None:
        """The earliest ``due_at`` of any enabled job (index "due"), or None."""
        doc = self.jobs.find_one({"due_at": {"$gt": self._EPOCH}}, {"due_at": 1}, sort=[("due_at", ASCENDING)])
        return doc["due_at"] if doc else None

    @_translated
    def insert_scheduled_runs(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert slot runs in one unordered batch; returns those whose slot already had a run."""
        from pymongo.errors import BulkWriteError

        if not runs:
            return []
        try:
            self.runs.insert_many(runs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != 11000 for error in errors):
                raise
            return [runs[error["index"]] for error in errors]
        return []

    @_translated
    def adopt_scheduled_run(self, run: dict[str, Any], term: int) -> bool:
        """Overwrite a slot's run that an earlier leader wrote but never committed
        (still ``pending`` or ``skipped``). False when the slot's run went further."""
        query = {"_id": run["_id"], "status": {"$in": DRAFT_STATUSES}, **self._fenced(term)}
        return self.runs.replace_one(query, run).matched_count == 1

    @_translated
    def advance_jobs(self, advances: list[JobAdvance], term: int, mark: str, now: datetime) -> set[str]:
        """Apply the compare-and-set job writes in one bulk; the ids of the jobs they applied to.

        Advances with identical conditions and changes (a herd of jobs on one
        schedule) share one ``UpdateMany``. ``mark`` (unique per call) is written to
        ``sched_mark``; only when some write matched nothing are the jobs read back
        to tell which applied.
        """
        from pymongo import UpdateMany, UpdateOne

        if not advances:
            return set()
        groups: dict[str, list[JobAdvance]] = {}
        for advance in advances:
            key = repr((sorted(advance.expect.items()), sorted(advance.changes.items()), advance.triggered))
            groups.setdefault(key, []).append(advance)
        ops: list[UpdateOne | UpdateMany] = []
        for group in groups.values():
            sample = group[0]
            update: dict[str, Any] = {"$set": {**sample.changes, "sched_term": term, "sched_mark": mark}}
            if sample.triggered:
                update["$max"] = {"last_triggered_at": now}
            conditions = {**sample.expect, **self._fenced(term)}
            if len(group) == 1:
                ops.append(UpdateOne({"_id": sample.job_id, **conditions}, update))
            else:
                ops.append(UpdateMany({"_id": {"$in": [a.job_id for a in group]}, **conditions}, update))
        ids = [advance.job_id for advance in advances]
        if self.jobs.bulk_write(ops, ordered=False).matched_count == len(ids):
            return set(ids)
        return {doc["_id"] for doc in self.jobs.find({"_id": {"$in": ids}}, {"sched_mark": 1})
                if doc.get("sched_mark") == mark}

    @_translated
    def delete_scheduled_drafts(self, run_ids: list[str], term: int) -> int:
        """Delete slot runs whose job advance never applied (drafts: never published)."""
        if not run_ids:
            return 0
        query = {"_id": {"$in": run_ids}, "status": {"$in": DRAFT_STATUSES}, **self._fenced(term)}
        return self.runs.delete_many(query).deleted_count

    @_translated
    def mark_runs_queued(self, run_ids: list[str], at: datetime, term: int) -> int:
        """``pending`` → ``queued`` (``queued_at`` = ``at``) for runs RabbitMQ confirmed, in one statement."""
        if not run_ids:
            return 0
        query = {"_id": {"$in": run_ids}, "status": RunStatus.PENDING, **self._fenced(term)}
        update = {"$set": {"status": RunStatus.QUEUED, "queued_at": at, "sched_term": term}}
        return self.runs.update_many(query, update).modified_count

    @_translated
    def pending_runs(self, limit: int) -> list[dict[str, Any]]:
        """The oldest unpublished runs (index "by_status"), oldest first, slots in order."""
        query: dict[str, Any] = {"status": RunStatus.PENDING}
        cursor = self.runs.find(query).sort([("status", ASCENDING), ("created_at", ASCENDING)]).limit(limit)
        return sorted(cursor, key=lambda run: (run["created_at"], run["scheduled_for"], run["_id"]))

    @_translated
    def count_pending_runs(self) -> int:
        return self.runs.count_documents({"status": RunStatus.PENDING})

    @_translated
    def job_positions(self, job_ids: list[str]) -> dict[str, datetime | None]:
        """``next_fire_at`` of each existing job: a slot run before it was committed."""
        docs = self.jobs.find({"_id": {"$in": job_ids}}, {"next_fire_at": 1})
        return {doc["_id"]: doc.get("next_fire_at") for doc in docs}

    @_translated
    def skip_pending_runs(self, run_ids: list[str], error: dict[str, Any], now: datetime, term: int) -> int:
        """Record unpublished runs as ``skipped`` with ``error`` (e.g. their job was deleted)."""
        if not run_ids:
            return 0
        query = {"_id": {"$in": run_ids}, "status": RunStatus.PENDING, **self._fenced(term)}
        update = {"$set": {"status": RunStatus.SKIPPED, "error": error, "finished_at": now, "sched_term": term}}
        return self.runs.update_many(query, update).modified_count

    @_translated
    def disable_job(self, job_id: str, revision: int | None, reason: str, now: datetime, term: int) -> bool:
        """Disable a job the scheduler cannot plan any more, with ``disabled_reason``."""
        query = {"_id": job_id, "revision": revision, **self._fenced(term)}
        update = {"$set": {"enabled": False, "due_at": None, "disabled_reason": reason, "updated_at": now,
                           "sched_term": term}, "$inc": {"revision": 1}}
        return self.jobs.update_one(query, update).modified_count == 1

    @_translated
    def claim_leader_lease(self, holder: str, duration_s: float, now: datetime) -> Lease | None:
        """Claim the leader lease (created on first claim); None while another holds it."""
        return leases.claim(self.leases, LEADER_LEASE_ID, holder, int(duration_s * 1000), now, upsert=True)

    @_translated
    def renew_leader_lease(self, lease: Lease, duration_s: float, now: datetime) -> Lease | None:
        return leases.renew(self.leases, lease, int(duration_s * 1000), now)

    @_translated
    def release_leader_lease(self, lease: Lease) -> bool:
        return leases.release(self.leases, lease)

    @_translated
    def leader_lease(self) -> Lease | None:
        """The leader lease as stored (possibly expired), or None."""
        return leases.read(self.leases, LEADER_LEASE_ID)

    @_translated
    def scheduler_heartbeat(self, holder: str, now: datetime, expires_at: datetime, fields: dict[str, Any]) -> None:
        """Upsert this scheduler's heartbeat (read by `scheduler_status`)."""
        self.db[SCHEDULERS].update_one(
            {"_id": holder},
            {"$set": {**fields, "seen_at": now, "expires_at": expires_at}, "$setOnInsert": {"started_at": now}},
            upsert=True,
        )

    @_translated
    def remove_scheduler_heartbeat(self, holder: str) -> None:
        self.db[SCHEDULERS].delete_one({"_id": holder})

    # -- scheduler leadership (written by the scheduler, read by the API) -------

    @_translated
    def scheduler_status(self, now: datetime) -> dict[str, Any]:
        """The leader (``holder`` = ``hostname:pid``, null while none), its term and
        lease expiry, and the live standbys (heartbeats not yet expired)."""
        doc = self.leases.find_one({"_id": LEADER_LEASE_ID}) or {}
        lease = doc.get("lease") or None
        live = lease is not None and lease["expires_at"] > now
        holder = lease["holder"] if live else None
        standbys = sorted(
            beat["_id"]
            for beat in self.db[SCHEDULERS].find({"expires_at": {"$gt": now}}, projection={"_id": 1})
            if beat["_id"] != holder
        )
        return {
            "holder": holder,
            "pid": _pid_of(holder),
            "term": int(lease["token"]) if live else doc.get("lease_term"),
            "lease_expires_at": format_instant(lease["expires_at"]) if live else None,
            "standbys": standbys,
        }

    @_translated
    def server_time(self) -> datetime:
        """The database's clock (the one lease expiry is decided on)."""
        # command replies are decoded with pymongo's default codec options unless told:
        # without the client's (tz_aware) ones localTime would arrive naive
        reply = self.client.admin.command("hello", codec_options=self.client.codec_options)
        local = reply.get("localTime")
        if local is None:
            raise StoreUnavailable("MongoDB did not report its time")
        return local


__all__ = ["MongoStore", "PyMongoError", "schedule_state", "translate_errors"]
