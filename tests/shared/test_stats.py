"""`cronhive.stats`: bounded aggregates for the overview, against the real store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cronhive import cron, stats
from cronhive.domain import Job, RunError, jitter_offset, new_run
from cronhive.enums import RunStatus, Trigger
from cronhive.store import MongoStore

NOW = datetime(2026, 3, 26, 10, 30, tzinfo=UTC)


def add_job(store: MongoStore, name: str, schedule: str = "*/5 * * * *", **fields: object) -> Job:
    return store.create_job({"name": name, "schedule": schedule, "handler": "noop", **fields}, NOW - timedelta(days=2))


def add_run(store: MongoStore, job: Job, run_id: str, finished: datetime | None, status: str = "succeeded",
            lateness_ms: int | None = 10, error: dict | None = None) -> None:
    run = new_run(job, run_id, Trigger.SCHEDULE, (finished or NOW) - timedelta(seconds=5), NOW - timedelta(days=1),
                  None)
    store.insert_run(replace(run, status=RunStatus(status), finished_at=finished, lateness_ms=lateness_ms,
                             error=RunError(**error) if error else None))


def test_job_counts_by_status(store: MongoStore) -> None:
    stats.ensure_indexes(store)
    for index in range(5):
        add_job(store, f"on {index}")
    for index in range(2):
        add_job(store, f"off {index}", enabled=False)
    assert stats.job_counts(store) == stats.JobCounts(active=5, disabled=2)
    assert stats.job_counts(store).total == 7


def test_runs_per_hour_by_outcome_skip_reason_and_lateness(store: MongoStore) -> None:
    stats.ensure_indexes(store)
    job = add_job(store, "counted")
    add_run(store, job, "a", NOW - timedelta(minutes=5), lateness_ms=100)
    add_run(store, job, "b", NOW - timedelta(minutes=20), lateness_ms=300)
    add_run(store, job, "c", NOW - timedelta(minutes=40), status="failed", lateness_ms=50_000)
    add_run(store, job, "d", NOW - timedelta(hours=3, minutes=10), status="skipped", lateness_ms=None,
            error={"type": "misfire", "message": "late"})
    add_run(store, job, "e", NOW - timedelta(hours=3, minutes=20), status="skipped", lateness_ms=None,
            error={"type": "overlap", "message": "busy"})
    add_run(store, job, "old", NOW - timedelta(hours=30))  # outside the 24 hours
    add_run(store, job, "running", None, status="running")  # not finished: not counted
    activity = stats.run_activity(store, NOW)
    assert len(activity.hours) == 24
    assert activity.hours[-1].start == datetime(2026, 3, 26, 10, tzinfo=UTC)
    assert activity.hours[-1].counts == {"succeeded": 2}
    assert activity.hours[-2].counts == {"failed": 1}
    three_ago = next(b for b in activity.hours if b.start == datetime(2026, 3, 26, 7, tzinfo=UTC))
    assert three_ago.counts == {"skipped": 2} and three_ago.skip_types == {"misfire": 1, "overlap": 1}
    assert (activity.total("succeeded"), activity.total("failed"), activity.skipped("misfire")) == (2, 1, 1)
    assert activity.lateness_samples == 3
    assert (activity.lateness_p50_ms, activity.lateness_p99_ms) == (300, 50_000)


def test_a_settled_hour_is_kept_and_read_back(store: MongoStore) -> None:
    stats.ensure_indexes(store)
    job = add_job(store, "kept")
    add_run(store, job, "a", NOW - timedelta(hours=2, minutes=10))
    first = stats.run_activity(store, NOW)
    kept = store.db[stats.ROLLUPS].find_one({"_id": datetime(2026, 3, 26, 8, tzinfo=UTC)})
    assert kept is not None and kept["counts"] == {"succeeded": 1}
    assert store.db[stats.ROLLUPS].count_documents({}) == 23  # every settled hour, the open one is not kept
    store.runs.delete_many({})  # what is kept is what finished, even if retention removes the runs later
    assert stats.run_activity(store, NOW).hours == first.hours


def test_upcoming_fires_are_the_soonest_of_all_jobs_with_jitter(store: MongoStore) -> None:
    stats.ensure_indexes(store)
    jobs = [add_job(store, "every 5", "*/5 * * * *"), add_job(store, "at 45", "45 * * * *"),
            add_job(store, "jittery", "*/20 * * * *", jitter_s=30), add_job(store, "tomorrow", "0 3 * * *"),
            add_job(store, "paused", "* * * * *", enabled=False)]
    now = NOW - timedelta(days=2) + timedelta(seconds=1)
    upcoming = stats.upcoming_fires(store, now, timedelta(hours=1), 8)
    expected = []
    for job in jobs[:4]:
        jitter = jitter_offset(job.job_id, int(job.jitter_s))
        for slot in cron.fires_between(job.schedule, "UTC", now - timedelta(seconds=1), now + timedelta(hours=1), 100):
            if slot + jitter < now + timedelta(hours=1):
                expected.append((slot + jitter, job.job_id))
    expected.sort()
    assert [(fire.due_at, fire.job_id) for fire in upcoming.fires] == expected[:8]
    assert upcoming.more is True
    assert all(fire.job_id != jobs[4].job_id for fire in upcoming.fires)


def test_recently_finished_is_newest_first_within_the_hour(store: MongoStore) -> None:
    stats.ensure_indexes(store)
    job = add_job(store, "recent")
    add_run(store, job, "older", NOW - timedelta(minutes=50))
    add_run(store, job, "newer", NOW - timedelta(minutes=1))
    add_run(store, job, "stale", NOW - timedelta(minutes=90))
    assert [run.run_id for run in stats.recently_finished(store, NOW, 10)] == ["newer", "older"]
