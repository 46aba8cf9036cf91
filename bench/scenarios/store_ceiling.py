"""The store's own ceiling, measured in the same run against the same store.

What one client gets from the MongoDB-wire store the scenarios use (SecantusDB,
or ``BENCH_MONGODB_URI``), in a database of its own, before any cronhive process
runs — so cronhive's runs per second can be read as a fraction of what the store
can do at all:

- ``insert_docs_per_s``: documents per second inserted by ``insert_many`` of
  ``INSERT_BATCH`` run-sized documents per call (the store's cheapest write);
- ``update_docs_per_s``: documents per second changed by ``update_one`` by ``_id``
  one after another (the shape of a compare-and-set on a run or a job);
- ``bulk_update_docs_per_s``: the same updates in unordered ``bulk_write`` calls of
  ``BULK_BATCH`` (the shape of a batched commit);
- ``find_one_per_s``: ``find_one`` by ``_id``.

Each is the median of ``ROUNDS`` timed rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import MongoClient, UpdateOne

from bench.profiles import Profile
from bench.services import Services

INSERT_BATCH = 1000
INSERTS_PER_ROUND = 5000
UPDATES_PER_ROUND = 1000
BULK_BATCH = 100
FINDS_PER_ROUND = 1000
ROUNDS = 3


def run_document(index: int) -> dict[str, Any]:
    """About the size and shape of a run document."""
    now = datetime.now(UTC)
    return {"_id": f"run_ceiling_{index:08d}", "job_id": f"job_{index % 1000:04d}", "trigger": "schedule",
            "status": "queued", "scheduled_for": now, "created_at": now, "queued_at": now, "attempt": 0,
            "lease_token": None, "worker": None, "started_at": None, "finished_at": None, "duration_ms": None,
            "lateness_ms": None, "error": None, "sched_term": 1, "attempts": []}


def rate(count: int, call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return count / (time.perf_counter() - started)


def run(profile: Profile, services: Services) -> dict[str, Any]:
    database = f"cronhive_bench_ceiling_{services.new_tag()}"
    client: MongoClient[dict[str, Any]] = MongoClient(services.mongodb_uri, tz_aware=True)
    try:
        runs = client[database]["runs"]
        next_id = 0
        inserts, updates, bulk, finds = [], [], [], []
        for _ in range(ROUNDS):
            docs = [run_document(next_id + index) for index in range(INSERTS_PER_ROUND)]
            next_id += INSERTS_PER_ROUND

            def insert(docs: list[dict[str, Any]] = docs) -> None:
                for start in range(0, len(docs), INSERT_BATCH):
                    runs.insert_many(docs[start:start + INSERT_BATCH], ordered=False)

            inserts.append(rate(len(docs), insert))
            ids = [doc["_id"] for doc in docs[:UPDATES_PER_ROUND]]

            def update(ids: list[str] = ids) -> None:
                for run_id in ids:
                    runs.update_one({"_id": run_id, "status": "queued"}, {"$set": {"status": "running"}})

            updates.append(rate(len(ids), update))

            def bulk_update(ids: list[str] = ids) -> None:
                for start in range(0, len(ids), BULK_BATCH):
                    runs.bulk_write([UpdateOne({"_id": run_id, "status": "running"}, {"$set": {"status": "succeeded"}})
                                     for run_id in ids[start:start + BULK_BATCH]], ordered=False)

            bulk.append(rate(len(ids), bulk_update))

            def find(ids: list[str] = ids) -> None:
                for run_id in ids[:FINDS_PER_ROUND]:
                    runs.find_one({"_id": run_id})

            finds.append(rate(min(len(ids), FINDS_PER_ROUND), find))
        return {
            "insert_docs_per_s": round(statistics.median(inserts)),
            "update_docs_per_s": round(statistics.median(updates)),
            "bulk_update_docs_per_s": round(statistics.median(bulk)),
            "find_one_per_s": round(statistics.median(finds)),
            "setup": (f"one client; insert_many of {INSERT_BATCH}, update_one by _id, bulk_write of {BULK_BATCH} "
                      f"UpdateOne, find_one by _id; median of {ROUNDS} rounds, run-sized documents"),
        }
    finally:
        client.drop_database(database)
        client.close()
