"""The MongoDB store: jobs, runs and leases, with domain errors.

Relies only on features of MongoDB 4.2+ standalone servers (tested against
MongoDB-wire SecantusDB; production targets MongoDB 7+): single-document atomic
updates, update pipelines with ``$$NOW``, ``find_one_and_update``, unique and
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

from shared import cron, leases
from shared.domain import DEFAULT_POLICIES, format_instant, jitter_offset, job_id_for_name
from shared.errors import DuplicateJob, JobNotFound, RunNotFound, StoreUnavailable
from shared.leases import Lease
from shared.settings import Settings, redact_url

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

MAX_GENERATED_ID_ATTEMPTS = 50
#: The leader lease document (in ``leases``) and the scheduler heartbeat collection.
LEADER_LEASE_ID = "scheduler"
SCHEDULERS = "schedulers"


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
    def open(cls, settings: Settings, **client_options: Any) -> "MongoStore":
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
            partialFilterExpression={"trigger": "schedule"},
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
            query["enabled"] = status == "active"
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
        current = self.get_job(job_id)
        merged = {**current, **changes}
        update: dict[str, Any] = {**changes, "updated_at": now}
        timing_changed = any(
            key in changes and changes[key] != current.get(key) for key in ("schedule", "timezone", "jitter_s")
        )
        if not merged.get("enabled"):
            update["due_at"] = None
        elif timing_changed or current.get("next_fire_at") is None:
            update.update(schedule_state(merged, now))
            update["disabled_reason"] = None
        elif not current.get("enabled"):
            # re-enabled: the slot it was waiting for (maybe long past) becomes due again
            update["due_at"] = current["next_fire_at"] + jitter_offset(job_id, int(merged.get("jitter_s") or 0))
            update["disabled_reason"] = None
        doc = self.jobs.find_one_and_update(
            {"_id": job_id},
            {"$set": update, "$inc": {"revision": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise JobNotFound(f"job {job_id!r} not found", details={"job_id": job_id})
        return doc

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
        """``pending`` → ``queued`` once the broker confirmed the publish."""
        result = self.runs.update_one(
            {"_id": run_id, "status": "pending"}, {"$set": {"status": "queued", "queued_at": now}}
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
    ) -> Lease | None:
        """Claim the job's run lease (free, expired at ``now``, or ``mine``); None when held by another."""
        return leases.claim(
            self.jobs, job_id, holder, int(duration_s * 1000), now, run_id=run_id, mine=mine, extra_set=extra_set
        )

    @_translated
    def renew_job_lease(self, lease: Lease, duration_s: float, now: datetime) -> Lease | None:
        return leases.renew(self.jobs, lease, int(duration_s * 1000), now)

    @_translated
    def release_job_lease(self, lease: Lease, extra_set: dict[str, Any] | None = None) -> bool:
        return leases.release(self.jobs, lease, extra_set)

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
        reply = self.client.admin.command("hello")
        local = reply.get("localTime")
        if local is None:
            raise StoreUnavailable("MongoDB did not report its time")
        return local


__all__ = ["MongoStore", "translate_errors", "schedule_state", "PyMongoError"]
