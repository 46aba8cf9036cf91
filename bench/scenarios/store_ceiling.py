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
- ``find_one_per_s``: ``find_one`` by ``_id``;
- ``run_path_floor_runs_per_s``: runs per second the run path's updates allow at most
  on this store, with nothing else running — the six updates each run makes after
  its insert, each in the batched shape cronhive sends (a batch's compare-and-sets as
  `cronhive.store.group_commit.statements` writes them, the ``queued`` mark as
  `update_by_ids` does), on documents in collections
  with cronhive's own indexes (``ensure_indexes``): on ``runs`` the leader's
  ``queued`` mark (``update_many``), the start and the outcome (``bulk_write``); on
  ``jobs`` the advance, the claim and the job's outcome (``bulk_write``). On a store
  whose cost per updated document grows with the collection's indexes this, not
  the bare update rate, is what bounds cronhive's runs/s; ``runs_update_docs_per_s``
  and ``jobs_update_docs_per_s`` are those two collections' own rates.

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
from cronhive.store import MongoStore
from cronhive.store.base import update_by_ids
from cronhive.store.group_commit import Cas, cas, holds, statements

INSERT_BATCH = 1000
INSERTS_PER_ROUND = 5000
UPDATES_PER_ROUND = 1000
BULK_BATCH = 100
FINDS_PER_ROUND = 1000
ROUNDS = 3
#: runs (and as many jobs) per round of the run-path floor
FLOOR_RUNS = 1000


def run_document(index: int) -> dict[str, Any]:
    """About the size and shape of a run document."""
    now = datetime.now(UTC)
    return {"_id": f"run_ceiling_{index:08d}", "job_id": f"job_{index % 1000:04d}", "trigger": "schedule",
            "status": "queued", "scheduled_for": now, "created_at": now, "queued_at": now, "attempt": 0,
            "lease_token": None, "worker": None, "started_at": None, "finished_at": None, "duration_ms": None,
            "lateness_ms": None, "error": None, "sched_term": 1, "attempts": []}


def job_document(index: int) -> dict[str, Any]:
    """About the size and shape of a job document (its indexed fields all set)."""
    now = datetime.now(UTC)
    return {"_id": f"job_floor_{index:06d}", "name": f"floor {index}", "schedule": "* * * * *", "handler": "noop",
            "args": {}, "timezone": "UTC", "enabled": True, "tags": ["bench", f"t{index % 7}"], "created_at": now,
            "updated_at": now, "revision": 1, "incarnation": f"i{index}", "next_fire_at": now, "due_at": now,
            "lease": None, "lease_term": 0, "sched_term": 1, "last_run_id": None, "last_run_status": None,
            "last_run_duration_ms": None, "fires": 0}


def floor_round(runs: Any, jobs: Any, round_no: int) -> tuple[float, float, float]:
    """One round of the six run-path updates over ``FLOOR_RUNS`` runs of as many jobs:
    (runs per second over all six, runs' documents/s, jobs' documents/s)."""
    tag = f"{round_no:02d}"
    job_ids = [f"job_floor_{index:06d}" for index in range(FLOOR_RUNS)]
    run_ids = [f"run_floor_{tag}_{index:06d}" for index in range(FLOOR_RUNS)]
    jobs.insert_many([job_document(index) for index in range(FLOOR_RUNS)], ordered=False)
    docs = [{**run_document(index), "_id": run_ids[index], "job_id": job_ids[index], "status": "pending"}
            for index in range(FLOOR_RUNS)]
    runs.insert_many(docs, ordered=False)
    now = datetime.now(UTC)
    spent = {"runs": 0.0, "jobs": 0.0}

    def timed(where: str, batch: Callable[[int, int], None]) -> None:
        started = time.perf_counter()
        for start in range(0, FLOOR_RUNS, BULK_BATCH):
            batch(start, start + BULK_BATCH)
        spent[where] += time.perf_counter() - started

    def bulk(coll: Any, writes: list[Cas]) -> None:  # as the group commit sends a batch
        coll.bulk_write([op for op, _ in statements(writes)], ordered=False)

    def set_if(doc_id: str, expected: dict[str, Any], fields: dict[str, Any]) -> Cas:
        return cas(doc_id, expected, {"$set": fields}, holds(fields))

    timed("jobs", lambda a, b: bulk(jobs, [set_if(job_id, {"sched_term": 1}, {
        "next_fire_at": now, "due_at": now, "lease": {"holder": f"run:{run_id}", "token": 1, "expires_at": now},
        "lease_term": 1}) for job_id, run_id in zip(job_ids[a:b], run_ids[a:b], strict=True)]))
    timed("runs", lambda a, b: update_by_ids(runs, run_ids[a:b], {"status": "pending"},
                                             {"$set": {"status": "queued", "queued_at": now}}))
    timed("jobs", lambda a, b: bulk(jobs, [set_if(job_id, {"lease.token": 1, "lease_term": 1}, {
        "lease": {"holder": "worker:1", "token": 2, "expires_at": now}, "lease_term": 2})
        for job_id in job_ids[a:b]]))
    timed("runs", lambda a, b: bulk(runs, [set_if(run_id, {"status": "queued", "attempt": 0}, {
        "status": "running", "attempt": 1, "worker": "worker:1", "started_at": now, "lease_token": 2})
        for run_id in run_ids[a:b]]))
    timed("runs", lambda a, b: bulk(runs, [set_if(run_id, {"attempt": 1, "lease_token": 2}, {
        "status": "succeeded", "finished_at": now, "duration_ms": 1, "attempts": [{"n": 1, "status": "succeeded"}]})
        for run_id in run_ids[a:b]]))
    timed("jobs", lambda a, b: bulk(jobs, [set_if(job_id, {"lease.token": 2}, {
        "lease": None, "last_run_id": run_id, "last_run_status": "succeeded", "last_run_duration_ms": 1})
        for job_id, run_id in zip(job_ids[a:b], run_ids[a:b], strict=True)]))
    jobs.delete_many({})
    return (FLOOR_RUNS / (spent["runs"] + spent["jobs"]), 3 * FLOOR_RUNS / spent["runs"],
            3 * FLOOR_RUNS / spent["jobs"])


def run_path_floor(client: MongoClient[dict[str, Any]], database: str) -> dict[str, Any]:
    """The six run-path updates per run, on collections indexed as cronhive's are."""
    store = MongoStore(client, database, owns_client=False)
    store.ensure_indexes()
    rounds = [floor_round(store.runs, store.jobs, round_no) for round_no in range(ROUNDS)]
    return {"run_path_floor_runs_per_s": round(statistics.median(r[0] for r in rounds), 1),
            "runs_update_docs_per_s": round(statistics.median(r[1] for r in rounds)),
            "jobs_update_docs_per_s": round(statistics.median(r[2] for r in rounds))}


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
        floor = run_path_floor(client, f"{database}_floor")
        return {
            "insert_docs_per_s": round(statistics.median(inserts)),
            "update_docs_per_s": round(statistics.median(updates)),
            "bulk_update_docs_per_s": round(statistics.median(bulk)),
            "find_one_per_s": round(statistics.median(finds)),
            **floor,
            "setup": (f"one client; insert_many of {INSERT_BATCH}, update_one by _id, bulk_write of {BULK_BATCH} "
                      f"UpdateOne, find_one by _id; median of {ROUNDS} rounds, run-sized documents; floor: "
                      f"{FLOOR_RUNS} runs of as many jobs through the six run-path updates, batches of {BULK_BATCH}, "
                      f"cronhive's indexes"),
        }
    finally:
        client.drop_database(database)
        client.drop_database(f"{database}_floor")
        client.close()
