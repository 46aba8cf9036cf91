"""Worker heartbeats: which worker processes are alive, read by the API and the dashboard.

Each worker process upserts one document in the collection ``workers``
(``_id`` = its ``hostname:pid``, the name its runs carry in ``worker``) every
`HEARTBEAT_S` seconds, with ``expires_at`` = the database clock + `HEARTBEAT_TTL_S`.
A TTL index on ``expires_at`` removes the documents of processes that died
without saying goodbye; since the server's TTL monitor runs only about once a
minute, readers also filter on ``expires_at`` > now, so a worker counts as alive
exactly while its last beat has not expired. A worker that stops cleanly deletes
its document.

Invariants: one document per live worker process; ``seen_at`` <= ``expires_at``;
``started_at`` is written once, on the first beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING

from cronhive.domain import format_instant
from cronhive.store import MongoStore, translate_errors

COLLECTION = "workers"
#: Seconds between two beats of a worker process.
HEARTBEAT_S = 5.0
#: A worker whose last beat is older than this is not alive (three missed beats).
HEARTBEAT_TTL_S = 3 * HEARTBEAT_S
#: The most heartbeats one read returns (a fleet larger than this is shown truncated).
MAX_WORKERS = 500


@dataclass(frozen=True)
class WorkerBeat:
    """What a worker process reports about itself in each beat."""

    worker: str
    hostname: str
    pid: int
    queue: str
    threads: int
    handlers: tuple[str, ...]
    in_progress: int
    processed: int
    started_at: datetime | None = None
    seen_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> WorkerBeat:
        return cls(
            worker=doc["_id"],
            hostname=str(doc.get("hostname") or ""),
            pid=int(doc.get("pid") or 0),
            queue=str(doc.get("queue") or ""),
            threads=int(doc.get("threads") or 0),
            handlers=tuple(doc.get("handlers") or ()),
            in_progress=int(doc.get("in_progress") or 0),
            processed=int(doc.get("processed") or 0),
            started_at=doc.get("started_at"),
            seen_at=doc.get("seen_at"),
            expires_at=doc.get("expires_at"),
        )

    def view(self) -> dict[str, Any]:
        """The worker as ``GET /api/v1/cron/workers`` shows it."""
        return {
            "worker": self.worker,
            "hostname": self.hostname,
            "pid": self.pid,
            "queue": self.queue,
            "threads": self.threads,
            "handlers": list(self.handlers),
            "in_progress": self.in_progress,
            "processed": self.processed,
            "started_at": format_instant(self.started_at),
            "seen_at": format_instant(self.seen_at),
            "expires_at": format_instant(self.expires_at),
        }


def ensure_indexes(store: MongoStore) -> None:
    """The TTL index that removes dead workers' heartbeats (idempotent)."""
    with translate_errors(store.uri):
        store.db[COLLECTION].create_index([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=0)


def beat(store: MongoStore, report: WorkerBeat, now: datetime) -> None:
    """Upsert the worker's heartbeat at ``now`` (the database clock)."""
    fields = {
        "hostname": report.hostname,
        "pid": report.pid,
        "queue": report.queue,
        "threads": report.threads,
        "handlers": list(report.handlers),
        "in_progress": report.in_progress,
        "processed": report.processed,
        "seen_at": now,
        "expires_at": now + timedelta(seconds=HEARTBEAT_TTL_S),
    }
    with translate_errors(store.uri):
        store.db[COLLECTION].update_one(
            {"_id": report.worker}, {"$set": fields, "$setOnInsert": {"started_at": now}}, upsert=True
        )


def remove(store: MongoStore, worker: str) -> None:
    """Delete the worker's heartbeat (a clean stop)."""
    with translate_errors(store.uri):
        store.db[COLLECTION].delete_one({"_id": worker})


def alive(store: MongoStore, now: datetime) -> list[WorkerBeat]:
    """The workers whose last beat has not expired at ``now``, by name (index "expiry";
    at most `MAX_WORKERS`)."""
    with translate_errors(store.uri):
        cursor = store.db[COLLECTION].find({"expires_at": {"$gt": now}}).limit(MAX_WORKERS)
        docs = list(cursor)
    return sorted((WorkerBeat.from_document(doc) for doc in docs), key=lambda beat: beat.worker)
