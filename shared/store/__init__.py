"""The MongoDB store, split by concern (one class each, composed by `MongoStore`):

* `cronhive.store.jobs.JobStore` — jobs (the API's CRUD, the trigger's and the
  worker's writes on a job);
* `cronhive.store.runs.RunStore` — runs (the API's reads, the worker's attempts,
  the reaper, retention);
* `cronhive.store.scheduling.SchedulingStore` — the leader's fenced writes,
  heartbeats and the leadership status;
* `cronhive.store.leases.LeaseStore` — the one lease implementation, for leases
  of every scope;
* `cronhive.store.maintenance.MaintenanceStore` — maintenance windows;
* `cronhive.store.ledger.LedgerStore` — the slot ledger's and the slot audit's reads;
* `cronhive.store.revisions.RevisionStore` — each job change's revision (the
  jobs' and the scheduler's writes record them);
* `cronhive.store.idempotency.IdempotencyStore` — the API's Idempotency-Key records;
* `cronhive.store.documents` — the edge: documents ↔ typed values.

Each process sees the store only through its interface
(`cronhive.store.protocols`: `ApiStore`, `SchedulerStore`, `WorkerStore`).

Relies only on features of MongoDB 4.2+ standalone servers (tested against
MongoDB-wire SecantusDB; production targets MongoDB 7+): single-document atomic
updates (some as update pipelines, never comparing with ``$$NOW``),
``find_one_and_update``, unique and compound indexes, ``count_documents``. No
transactions, no change streams. Every pymongo connectivity failure becomes
`StoreUnavailable` (503 in the API); duplicate keys become domain conflicts;
unknown ids become `NotFound`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import PyMongoError

from cronhive.enums import Trigger
from cronhive.errors import StoreUnavailable
from cronhive.settings import Settings
from cronhive.store.base import LEASES, SCHEDULERS, Document, translate_errors, translated
from cronhive.store.browse import JobBrowsing, JobPosition, JobsPage
from cronhive.store.idempotency import IdempotencyStore
from cronhive.store.jobs import JobStore
from cronhive.store.leases import LeaseStore
from cronhive.store.ledger import LedgerStore
from cronhive.store.maintenance import MaintenanceStore
from cronhive.store.protocols import ApiStore, SchedulerStore, WorkerStore
from cronhive.store.runs import RunStore
from cronhive.store.scheduling import LEADER_LEASE_ID, SchedulingStore


class MongoStore(JobStore, JobBrowsing, RunStore, SchedulingStore, LeaseStore, IdempotencyStore, MaintenanceStore,
                 LedgerStore):
    """Access to cronhive's collections. Create with `open`, close with `close`."""

    @classmethod
    def open(cls, settings: Settings, **client_options: Any) -> MongoStore:
        """A store on a new client (closed by `close`). Does not block on connecting."""
        client: MongoClient[Document] = MongoClient(
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

    @translated
    def ensure_indexes(self) -> None:
        """Create every index the store's queries rely on (idempotent)."""
        self.jobs.create_index([("created_at", ASCENDING), ("_id", ASCENDING)], name="created_order")
        self.jobs.create_index([("due_at", ASCENDING)], name="due")
        self.jobs.create_index([("handler", ASCENDING), ("created_at", ASCENDING)], name="by_handler")
        # the listings' filters, equality first, then the listing order (status counts use the prefix)
        self.jobs.create_index([("enabled", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
                               name="by_status")
        self.jobs.create_index([("enabled", ASCENDING), ("handler", ASCENDING), ("created_at", ASCENDING),
                                ("_id", ASCENDING)], name="by_status_handler")
        self.runs.create_index([("job_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                               name="job_history")
        self.runs.create_index(
            [("job_id", ASCENDING), ("scheduled_for", ASCENDING)],
            name="slot_key",
            unique=True,
            partialFilterExpression={"trigger": Trigger.SCHEDULE},
        )
        self.runs.create_index([("status", ASCENDING), ("created_at", ASCENDING)], name="by_status")
        self.jobs.create_index([("tags", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)], name="by_tag")
        self.runs.create_index([("job_id", ASCENDING), ("covers_until", ASCENDING)], name="covering")
        self.ensure_maintenance_indexes()
        self.ensure_revision_indexes()
        self.ensure_idempotency_indexes()
        # only runs with notifications still to deliver carry notify_due
        self.runs.create_index([("notify_due", ASCENDING)], name="notify_due", sparse=True)
        self.runs.create_index(
            [("job_id", ASCENDING), ("scheduled_for", ASCENDING)],
            name="backfill_key",
            unique=True,
            partialFilterExpression={"trigger": Trigger.BACKFILL},
        )
        self.runs.create_index([("trigger", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                               name="by_trigger")
        # GET /runs without a status, trigger or job: newest first over every run (since/until as a range)
        self.runs.create_index([("created_at", DESCENDING), ("_id", DESCENDING)], name="recent")

    @translated
    def ping(self) -> None:
        self.client.admin.command("ping")

    @translated
    def server_time(self) -> datetime:
        """The database's clock (the one lease expiry is decided on)."""
        # command replies are decoded with pymongo's default codec options unless told:
        # without the client's (tz_aware) ones localTime would arrive naive
        reply = self.client.admin.command("hello", codec_options=self.client.codec_options)
        local = reply.get("localTime")
        if local is None:
            raise StoreUnavailable("MongoDB did not report its time")
        return local  # type: ignore[no-any-return]


__all__ = ["LEADER_LEASE_ID", "LEASES", "SCHEDULERS", "JobPosition", "JobsPage", "MongoStore", "PyMongoError", "translate_errors"]


if TYPE_CHECKING:  # mypy checks that the store is what each process's interface says it needs

    def _conforms(store: MongoStore) -> tuple[ApiStore, SchedulerStore, WorkerStore]:
        return store, store, store
