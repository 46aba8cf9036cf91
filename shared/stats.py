"""Aggregate reads for the dashboard's overview, each bounded whatever the store holds.

Every function here costs a fixed, small number of MongoDB commands, and each
command reads through an index over a bounded range (never a collection scan
whose cost grows with the number of jobs or runs kept):

* `job_counts`: jobs by status (``active`` = ``enabled: true``, the API's
  ``status`` filter) — the collection's count plus an indexed count of the
  disabled jobs (index "by_status"): 2 commands.
* `run_activity`: runs *finished* per hour over the last 24 hours, by outcome
  (and skipped runs by why: ``overlap``, ``misfire`` = a missed slot, ...), plus
  start lateness p50/p99 of the runs finished in the last hour. A finished run's
  ``status`` and ``finished_at`` never change again, so the count of an hour that
  ended more than `SETTLE` ago is final: it is computed once (by any API process)
  and kept in ``run_stats_hourly`` (TTL: 3 days). A view then reads those rows, at
  most the hours not yet kept, and the last open hour — through index
  "finished" on ``runs.finished_at``: 3 commands, 5 when some hours were not kept
  yet. Counts are of runs as they finished; a run deleted later by retention
  (RUN_HISTORY_LIMIT) stays counted in its hour.
* `upcoming_fires`: the next fires within a horizon, from the soonest-due jobs
  (index "due", read in widening windows) and the cron rules of `cronhive.cron`:
  1 to 4 commands.
* `recently_finished`: the latest runs that finished in the last hour: 1 command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne

from cronhive import cron
from cronhive.domain import FINAL_RUN_STATUSES, Job, Run
from cronhive.errors import InvalidSchedule
from cronhive.store import MongoStore, translate_errors
from cronhive.store.documents import job_from_doc, run_from_doc

ROLLUPS = "run_stats_hourly"
HOUR = timedelta(hours=1)
#: An hour's count is final this long after the hour ended (a run's outcome is written
#: with the database clock a few milliseconds before it is committed).
SETTLE = timedelta(minutes=2)
ROLLUP_TTL_S = 3 * 86400
#: Lateness percentiles read at most this many of the last hour's finished runs (the latest; skipped ones have none).
LATENESS_SAMPLE = 5000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ensure_indexes(store: MongoStore) -> None:
    """The indexes these reads rely on (idempotent)."""
    with translate_errors(store.uri):
        store.runs.create_index([("finished_at", ASCENDING)], name="finished")
        store.db[ROLLUPS].create_index([("hour", ASCENDING)], name="expiry", expireAfterSeconds=ROLLUP_TTL_S)


# -- jobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobCounts:
    active: int
    disabled: int

    @property
    def total(self) -> int:
        return self.active + self.disabled


def job_counts(store: MongoStore) -> JobCounts:
    """Jobs by status: the collection's document count (MongoDB keeps it in the
    collection's metadata) and a count of the disabled ones (index "by_status")."""
    with translate_errors(store.uri):
        total = store.jobs.estimated_document_count()
        disabled = store.jobs.count_documents({"enabled": False})
    return JobCounts(active=max(0, total - disabled), disabled=disabled)


@dataclass(frozen=True)
class UpcomingFire:
    job_id: str
    name: str
    slot: datetime
    due_at: datetime


@dataclass(frozen=True)
class Upcoming:
    fires: tuple[UpcomingFire, ...]
    #: True when the horizon holds more fires than were listed.
    more: bool


#: The windows (minutes ahead of now) `upcoming_fires` reads jobs in, nearest first.
UPCOMING_WINDOWS_MIN = (1, 5, 15, 60)


def _soonest_due(store: MongoStore, now: datetime, horizon: timedelta, limit: int) -> list[Job]:
    """The ``limit`` soonest-due jobs (overdue first) due before ``now + horizon``, read in
    widening windows of ``due_at`` (index "due"): each read is bounded by the jobs due in
    its window, not by every job due within the horizon. At most len(UPCOMING_WINDOWS_MIN)
    commands."""
    found: list[Job] = []
    lower = _EPOCH
    for minutes in UPCOMING_WINDOWS_MIN:
        upper = min(now + timedelta(minutes=minutes), now + horizon)
        if upper <= lower:
            continue
        cursor = store.jobs.find({"due_at": {"$gt": lower, "$lt": upper}} if lower == _EPOCH
                                 else {"due_at": {"$gte": lower, "$lt": upper}})
        found.extend(job_from_doc(doc) for doc in cursor.sort("due_at", ASCENDING).limit(limit - len(found)))
        if len(found) >= limit or upper >= now + horizon:
            break
        lower = upper
    return found


def upcoming_fires(store: MongoStore, now: datetime, horizon: timedelta, limit: int) -> Upcoming:
    """The first ``limit`` fires (slot + the job's jitter) due before ``now + horizon``,
    overdue ones (due but not yet dispatched) included.

    Exact: a job that is not among the ``limit`` soonest-due cannot fire before the
    ``limit``-th of their first fires, so the soonest-due jobs' fires are enough."""
    until = now + horizon
    with translate_errors(store.uri):
        jobs = _soonest_due(store, now, horizon, limit)
    fires: list[UpcomingFire] = []
    for job in jobs:
        if job.due_at is None or job.invalid_reason is not None:  # an invalid job never fires
            continue
        jitter = job.jitter
        slot = job.next_fire_at or job.due_at - jitter
        fires.append(UpcomingFire(job.job_id, job.name, slot, job.due_at))
        try:
            later = cron.fires_between(job.schedule, job.zone, slot, until, limit)
        except InvalidSchedule:
            continue
        fires.extend(UpcomingFire(job.job_id, job.name, at, at + jitter) for at in later if at + jitter < until)
    fires.sort(key=lambda fire: (fire.due_at, fire.job_id))
    return Upcoming(fires=tuple(fires[:limit]), more=len(fires) > limit)


# -- runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class HourBucket:
    """Runs that finished in ``[start, start + 1 h)``: by status, and skipped ones by why."""

    start: datetime
    counts: dict[str, int] = field(default_factory=dict)
    skip_types: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class RunActivity:
    hours: tuple[HourBucket, ...]
    lateness_p50_ms: int | None
    lateness_p99_ms: int | None
    lateness_samples: int

    def total(self, status: str) -> int:
        return sum(bucket.counts.get(status, 0) for bucket in self.hours)

    def skipped(self, why: str) -> int:
        return sum(bucket.skip_types.get(why, 0) for bucket in self.hours)

    @property
    def skipped_total(self) -> int:
        return self.total("skipped")


def floor_hour(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _group_by_hour(store: MongoStore, start: datetime, end: datetime) -> dict[datetime, HourBucket]:
    """Final runs with ``finished_at`` in ``[start, end)``, counted per hour (index "finished")."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"finished_at": {"$gte": start, "$lt": end}, "status": {"$in": list(FINAL_RUN_STATUSES)}}},
        {"$group": {"_id": {"h": {"$dateTrunc": {"date": "$finished_at", "unit": "hour"}}, "s": "$status",
                            "t": "$error.type"}, "n": {"$sum": 1}}},
    ]
    buckets: dict[datetime, HourBucket] = {}
    for row in store.runs.aggregate(pipeline, batchSize=10_000):
        hour = row["_id"]["h"]
        hour = hour.replace(tzinfo=UTC) if hour.tzinfo is None else hour.astimezone(UTC)
        bucket = buckets.setdefault(hour, HourBucket(hour))
        status = str(row["_id"]["s"])
        bucket.counts[status] = bucket.counts.get(status, 0) + int(row["n"])
        if status == "skipped":
            why = str(row["_id"].get("t") or "other")
            bucket.skip_types[why] = bucket.skip_types.get(why, 0) + int(row["n"])
    return buckets


def _rollup_document(bucket: HourBucket) -> dict[str, Any]:
    return {"_id": bucket.start, "hour": bucket.start, "counts": bucket.counts, "skip_types": bucket.skip_types}


def _bucket_of(doc: dict[str, Any]) -> HourBucket:
    start = doc["_id"] if doc["_id"].tzinfo else doc["_id"].replace(tzinfo=UTC)
    return HourBucket(start.astimezone(UTC), dict(doc.get("counts") or {}), dict(doc.get("skip_types") or {}))


def percentile(values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def run_activity(store: MongoStore, now: datetime, hours: int = 24) -> RunActivity:
    """Runs finished per hour over the ``hours`` hours up to ``now`` (the current, open
    hour last), and lateness p50/p99 over the runs finished in the last hour."""
    current = floor_hour(now)
    first = current - (hours - 1) * HOUR
    settled_until = min(floor_hour(now - SETTLE), current)
    with translate_errors(store.uri):
        kept = {bucket.start: bucket for bucket in map(_bucket_of, store.db[ROLLUPS].find(
            {"_id": {"$gte": first, "$lt": settled_until}}))}
        missing = [first + i * HOUR for i in range(hours) if first + i * HOUR < settled_until
                   and first + i * HOUR not in kept]
        if missing:
            computed = _group_by_hour(store, missing[0], settled_until)
            fresh = {hour: computed.get(hour, HourBucket(hour)) for hour in missing}
            store.db[ROLLUPS].bulk_write([ReplaceOne({"_id": hour}, _rollup_document(bucket), upsert=True)
                                          for hour, bucket in fresh.items()], ordered=False)
            kept.update(fresh)
        live = _group_by_hour(store, settled_until, now + timedelta(seconds=1))
        recent = store.runs.find({"finished_at": {"$gte": now - HOUR}}, {"lateness_ms": 1, "_id": 0})
        lateness = [int(doc["lateness_ms"]) for doc in
                    recent.sort("finished_at", DESCENDING).limit(LATENESS_SAMPLE).batch_size(LATENESS_SAMPLE)
                    if doc.get("lateness_ms") is not None]
    buckets = tuple(kept.get(hour) or live.get(hour) or HourBucket(hour)
                    for hour in (first + i * HOUR for i in range(hours)))
    return RunActivity(hours=buckets, lateness_p50_ms=percentile(lateness, 0.50),
                       lateness_p99_ms=percentile(lateness, 0.99), lateness_samples=len(lateness))


def recently_finished(store: MongoStore, now: datetime, limit: int) -> list[Run]:
    """The ``limit`` latest runs that finished in the last hour, newest first (index "finished")."""
    with translate_errors(store.uri):
        # the overview shows neither output nor log: not read
        cursor = store.runs.find({"finished_at": {"$gte": now - HOUR}}, {"output_json": 0, "log": 0}).sort(
            "finished_at", DESCENDING)
        return [run_from_doc(doc) for doc in cursor.limit(limit)]
