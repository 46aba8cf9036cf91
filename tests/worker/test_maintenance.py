"""The reaper (dead attempts whose message is gone) and run history retention,
against the real store with a clock moved by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from cronhive.domain import Run, new_run
from cronhive.enums import RunStatus, Trigger
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.worker.maintenance import Reaper
from cronhive.worker.middleware import HistoryTrimmer
from cronhive.worker.records import follow_up_message
from tests import services
from tests.services import CommandCounter
from tests.worker.conftest import LEASE_S, Harness


def reaper_for(harness: Harness, worker: str, republished: list[tuple[str, int]]) -> Reaper:
    def republish(run: Run, after_attempt: int) -> None:
        republished.append((run.run_id, after_attempt))

    return Reaper(harness.store, harness.clock, harness.settings, republish, worker)


def test_the_reaper_abandons_or_recovers_runs_whose_worker_died(harness: Harness) -> None:
    harness.job("final", max_retries=0)
    harness.job("retried", max_retries=1)
    harness.job("alive")
    final = harness.trigger("final").run_id
    retried = harness.trigger("retried").run_id
    for run_id in (final, retried):
        assert harness.deliver(run_id).begin() is not None  # then the worker dies with its message
    republished: list[tuple[str, int]] = []
    reaper = reaper_for(harness, "host:1", republished)
    standby = reaper_for(harness, "host:2", republished)

    harness.clock.advance(LEASE_S + 1)
    alive = harness.deliver(harness.trigger("alive").run_id)
    assert alive.begin() is not None
    report = reaper.run_once(harness.clock.now())
    assert standby.run_once(harness.clock.now()) is None  # one reaper at a time (its lease)

    assert report is not None and report.abandoned == [final] and report.recovered == [retried]
    assert harness.run(final)["status"] == "abandoned"
    assert harness.job_doc("final")["lease"] is None and harness.job_doc("final")["last_run_status"] == "abandoned"
    assert harness.run(alive.attempt.run_id)["status"] == "running"  # type: ignore[union-attr]
    assert republished == [(retried, 1)]
    assert reaper.run_once(harness.clock.now()).recovered == []  # type: ignore[union-attr] # once per attempt
    harness.clock.advance(10 * LEASE_S + 1)  # ... unless that message got lost: published again much later
    again = reaper.run_once(harness.clock.now())
    assert again is not None and again.recovered == [retried]
    assert republished == [(retried, 1), (retried, 1)]

    message = follow_up_message(harness.settings.runs_queue, retried, "retried", 1)
    attempt = harness.deliver_message(message).begin()
    assert attempt is not None and attempt.number == 2
    assert [a["status"] for a in harness.run(retried)["attempts"]] == ["abandoned"]


def test_a_reaper_pass_reads_the_running_runs_jobs_in_one_query(harness: Harness) -> None:
    """A pass reads the running runs, then their jobs together (`jobs_by_id`, a read per
    50 jobs), where it read each run's job apart: a command per running run, every pass."""
    names = [f"busy_{index}" for index in range(4)]
    for name in names:
        harness.job(name)
        assert harness.deliver(harness.trigger(name).run_id).begin() is not None
    harness.job("dead", max_retries=0)
    dead = harness.trigger("dead").run_id
    assert harness.deliver(dead).begin() is not None
    harness.store.jobs.update_one({"_id": "dead"}, {"$set": {"lease.expires_at": harness.clock.now()}})
    commands = CommandCounter()
    counted = MongoStore.open(Settings.from_env({"MONGODB_URI": harness.store.uri, "MONGODB_DB": harness.store.db.name}),
                              event_listeners=[commands])
    try:
        reaper = Reaper(counted, harness.clock, harness.settings, lambda run, after: None, "host:1")
        harness.clock.advance(0.1)
        commands.take()
        report = reaper.reap(harness.clock.now())  # the pass's reaping (no lease claim, no retention sweep)
    finally:
        counted.close()
    assert report.abandoned == [dead]  # the other four are alive
    assert commands.take().count("find") == 2  # the running runs, then all their jobs at once


def test_after_mongodb_was_unreachable_the_reaper_leaves_expired_leases_a_lease_to_their_workers(
        harness: Harness) -> None:
    """Through an outage nobody can renew a lease: the attempts whose lease expired may
    be alive, their workers writing the outcomes they kept as MongoDB returns. The
    reaper's pass that finds MongoDB unreachable (a real client, nothing listening)
    holds every resolution back until a lease after MongoDB answers again; then a dead
    attempt is resolved as ever."""
    harness.job("final", max_retries=0)
    harness.job("retried", max_retries=1)
    final = harness.trigger("final").run_id
    retried = harness.trigger("retried").run_id
    for run_id in (final, retried):
        assert harness.deliver(run_id).begin() is not None
    republished: list[tuple[str, int]] = []
    reaper = reaper_for(harness, "host:1", republished)
    dead = MongoStore.open(replace(harness.settings, mongodb_uri=f"mongodb://127.0.0.1:{services.free_port()}",
                                   mongodb_timeout_ms=200))
    try:
        reaper.store = dead
        harness.clock.advance(LEASE_S + 1)  # the store is down past the leases' expiry
        assert reaper.scheduled_pass() is None  # logged, not raised
        assert reaper.outages.holding_until(harness.clock.now()) == harness.clock.now() + timedelta(seconds=LEASE_S)
        harness.clock.advance(LEASE_S)  # still down a lease later: still held
        assert reaper.scheduled_pass() is None
    finally:
        dead.close()
        reaper.store = harness.store

    harness.clock.advance(1)  # MongoDB answers again: nothing resolved for a lease from here
    answered_at = harness.clock.now()
    report = reaper.scheduled_pass()
    assert report is not None and report.abandoned == [] and report.recovered == []
    assert reaper.outages.holding_until(answered_at) == answered_at + timedelta(seconds=LEASE_S)
    harness.clock.advance(LEASE_S - 0.5)
    report = reaper.scheduled_pass()
    assert report is not None and report.abandoned == [] and report.recovered == []
    assert harness.run(final)["status"] == "running" and republished == []

    harness.clock.advance(0.5)  # a lease after it: the attempts are dead, resolved as ever
    report = reaper.scheduled_pass()
    assert report is not None and report.abandoned == [final] and report.recovered == [retried]
    assert harness.run(final)["status"] == "abandoned" and republished == [(retried, 1)]


def insert_runs(harness: Harness, job_id: str, count: int, *, status: str = "succeeded",
                age: timedelta = timedelta(0), tag: str = "") -> list[str]:
    job = harness.store.get_job(job_id)
    ids = []
    for index in range(count):
        created = harness.clock.now() - age + timedelta(seconds=index)
        run = new_run(job, f"run_{job_id}_{index:03d}_{status}{tag}", Trigger.MANUAL, created, created, None,
                      status=RunStatus(status))
        harness.store.insert_run(run)
        ids.append(run.run_id)
    return ids


def test_history_is_trimmed_per_job_to_the_newest_runs(harness: Harness) -> None:
    harness.job("busy")
    harness.job("other")
    stuck = insert_runs(harness, "busy", 1, status="running", age=timedelta(hours=1))
    finished = insert_runs(harness, "busy", 10)
    kept_elsewhere = insert_runs(harness, "other", 3)

    trimmer = HistoryTrimmer(harness.store, limit=4)
    assert trimmer.every == 1
    assert trimmer.after_finish("busy") == 6  # the 4 newest stay; a run still going is never trimmed
    remaining = {run["_id"] for run in harness.store.runs.find({"job_id": "busy"})}
    assert remaining == set(finished[-4:]) | set(stuck)
    assert harness.store.runs.count_documents({"_id": {"$in": kept_elsewhere}}) == 3
    assert HistoryTrimmer(harness.store, limit=1000).every == 50  # occasional, not after every run


def test_runs_older_than_the_retention_days_are_deleted(harness: Harness) -> None:
    harness.job("old")
    old = insert_runs(harness, "old", 5, age=timedelta(days=31))
    recent = insert_runs(harness, "old", 2, age=timedelta(days=29), tag="_recent")
    reaper = reaper_for(harness, "host:1", [])
    assert reaper.sweep_retention(harness.clock.now()) == len(old)
    assert {run["_id"] for run in harness.store.runs.find()} == set(recent)

    harness.store.ensure_run_retention(30)
    harness.store.ensure_run_retention(7)  # RUN_HISTORY_DAYS changed: the TTL index follows
    index = harness.store.runs.index_information()["retention"]
    assert index["key"] == [("created_at", 1)] and index["expireAfterSeconds"] == 7 * 86400
