"""cronhive.domain: slugs and ids, instants, jitter, the typed values' rules (the one
time zone default, schedule math) and the API views of jobs and runs (of documents
read through the store edge)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cronhive import domain
from cronhive.domain import (
    DEFAULT_POLICIES,
    JOB_ID_RE,
    format_instant,
    jitter_offset,
    job_id_for_name,
    new_run_id,
    slugify,
    utcnow,
)
from cronhive.store.documents import job_from_doc, run_from_doc

NOW = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("name,slug", [
    ("Daily Reminder Check", "daily_reminder_check"),
    ("  spaces  around  ", "spaces_around"),
    ("Crème brûlée à 8h", "creme_brulee_a_8h"),
    ("report-v2.final", "report_v2_final"),
    ("UPPER_and_lower", "upper_and_lower"),
    ("日本語", "ri_ben_yu"),
    ("!!!", "e84c538e"),
    ("", "e3b0c442"),
])
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_job_ids_for_a_name_are_job_plus_slug_then_numbered() -> None:
    assert job_id_for_name("Daily Reminder Check") == "job_daily_reminder_check"
    assert job_id_for_name("Daily Reminder Check", 1) == "job_daily_reminder_check_2"
    assert job_id_for_name("Daily Reminder Check", 9) == "job_daily_reminder_check_10"


@pytest.mark.parametrize("name", ["x" * 200, "a " * 100, "ab-" * 60, "Ünïcödé " * 20, "a" * 59 + "_" * 10 + "b"])
def test_generated_job_ids_always_match_the_pattern(name: str) -> None:
    ids = [job_id_for_name(name, attempt) for attempt in range(50)]
    assert all(JOB_ID_RE.fullmatch(job_id) for job_id in ids), ids
    assert len(set(ids)) == 50


def test_new_run_id_names_the_utc_second_and_is_unique() -> None:
    berlin = datetime(2026, 3, 26, 11, 25, 0, 999_000, tzinfo=timezone(timedelta(hours=1)))
    run_ids = {new_run_id(berlin) for _ in range(1000)}
    assert len(run_ids) == 1000
    assert all(re.fullmatch(r"run_20260326_102500_[0-9a-f]{8}", run_id) for run_id in run_ids)


@pytest.mark.parametrize("instant,text", [
    (datetime(2026, 3, 26, 8, 0, tzinfo=UTC), "2026-03-26T08:00:00Z"),
    (datetime(2026, 3, 26, 8, 0, 59, 999_999, tzinfo=UTC), "2026-03-26T08:00:59Z"),
    (datetime(2026, 3, 26, 10, 0, tzinfo=timezone(timedelta(hours=2))), "2026-03-26T08:00:00Z"),
    (datetime(2026, 3, 26, 8, 0), "2026-03-26T08:00:00Z"),  # naive values are UTC (what MongoDB returns)
    (None, None),
])
def test_format_instant(instant: datetime | None, text: str | None) -> None:
    assert format_instant(instant) == text


def test_utcnow_is_aware_with_whole_milliseconds() -> None:
    now = utcnow()
    assert now.tzinfo is UTC and now.microsecond % 1000 == 0


def test_jitter_is_deterministic_and_within_bounds() -> None:
    offsets = {job_id: jitter_offset(job_id, 60) for job_id in (f"job_{i}" for i in range(500))}
    assert all(timedelta(0) <= offset < timedelta(seconds=60) for offset in offsets.values())
    assert all(offset.microseconds % 1000 == 0 for offset in offsets.values())
    assert offsets == {job_id: jitter_offset(job_id, 60) for job_id in offsets}  # same job, same offset
    assert len(set(offsets.values())) > 400  # a herd is spread
    assert jitter_offset("job_1", 0) == timedelta(0)
    assert jitter_offset("job_1", -5) == timedelta(0)


def job_view(doc: dict, now: datetime) -> dict:
    """The view of the job a stored document holds."""
    return domain.job_view(job_from_doc(doc), now)


def run_view(doc: dict) -> dict:
    return domain.run_view(run_from_doc(doc))


def job_doc(**changes: object) -> dict:
    doc = {
        "_id": "job_x", "name": "X", "schedule": "0 8 * * *", "timezone": "UTC", "handler": "noop", "args": {},
        "enabled": True, **DEFAULT_POLICIES, "created_at": NOW, "updated_at": NOW, "revision": 1,
        "next_fire_at": NOW + timedelta(hours=22), "due_at": NOW + timedelta(hours=22, seconds=3),
        "last_triggered_at": None, "last_run_id": None, "last_run_status": None, "last_run_duration_ms": None,
        "lease": None, "lease_term": 0, "disabled_reason": None, "buffered_run_id": None,
    }
    doc.update(changes)
    return doc


def test_job_view_shows_every_field_with_nulls() -> None:
    view = job_view(job_doc(), NOW)
    assert view["job_id"] == "job_x" and view["status"] == "active" and view["lock_acquired"] is False
    assert view["next_trigger_at"] == "2026-03-27T08:00:03Z"  # due_at: the slot plus the job's jitter
    assert view["created_at"] == view["updated_at"] == "2026-03-26T10:00:00Z"
    for key in ("last_triggered_at", "last_run_status", "last_run_duration_ms", "last_run_id", "disabled_reason"):
        assert key in view and view[key] is None
    for key, value in DEFAULT_POLICIES.items():
        assert view[key] == value
    assert "_id" not in view and "lease" not in view and "due_at" not in view


def test_job_view_of_a_disabled_job_has_no_next_trigger() -> None:
    view = job_view(job_doc(enabled=False, due_at=None), NOW)
    assert view["status"] == "disabled" and view["enabled"] is False and view["next_trigger_at"] is None


def test_job_view_lock_acquired_tells_whether_a_live_lease_is_held() -> None:
    lease = {"holder": "run:r1", "run_id": "r1", "token": 3, "expires_at": NOW + timedelta(seconds=1)}
    assert job_view(job_doc(lease=lease), NOW)["lock_acquired"] is True
    assert job_view(job_doc(lease=lease), NOW + timedelta(seconds=1))["lock_acquired"] is False  # expired
    assert job_view(job_doc(lease=None), NOW)["lock_acquired"] is False


def test_job_view_fills_policies_missing_from_old_documents() -> None:
    doc = job_doc()
    for key in DEFAULT_POLICIES:
        del doc[key]
    del doc["timezone"], doc["args"]
    view = job_view(doc, NOW)
    assert view["timezone"] == "UTC" and view["args"] == {}
    assert {key: view[key] for key in DEFAULT_POLICIES} == DEFAULT_POLICIES


def test_run_view() -> None:
    doc = {
        "_id": "run_20260326_100000_abcd", "job_id": "job_x", "trigger": "manual", "scheduled_for": NOW,
        "status": "failed", "attempt": 2, "lease_token": 4, "worker": "host:12", "created_at": NOW,
        "queued_at": NOW, "started_at": NOW + timedelta(milliseconds=1500), "finished_at": NOW + timedelta(seconds=5),
        "duration_ms": 3500, "lateness_ms": 1500, "error": {"type": "HandlerFailed", "message": "boom"},
        "attempts": [{"attempt": 1, "worker": "host:11", "status": "failed", "started_at": NOW,
                      "finished_at": NOW + timedelta(milliseconds=900), "duration_ms": 900,
                      "error": {"type": "HandlerFailed", "message": "first"}}],
    }
    view = run_view(doc)
    assert view == {
        "run_id": "run_20260326_100000_abcd", "job_id": "job_x", "trigger": "manual",
        "scheduled_for": "2026-03-26T10:00:00Z", "status": "failed", "attempt": 2, "worker": "host:12",
        "created_at": "2026-03-26T10:00:00Z", "queued_at": "2026-03-26T10:00:00Z",
        "started_at": "2026-03-26T10:00:01Z", "finished_at": "2026-03-26T10:00:05Z",
        "duration_ms": 3500, "lateness_ms": 1500, "error": {"type": "HandlerFailed", "message": "boom", "traceback": None},
        "retry_at": None,
        "attempts": [{"attempt": 1, "worker": "host:11", "status": "failed", "started_at": "2026-03-26T10:00:00Z",
                      "finished_at": "2026-03-26T10:00:00Z", "duration_ms": 900,
                      "error": {"type": "HandlerFailed", "message": "first", "traceback": None}}],
        "output": None, "output_truncated": False, "log": None, "notifications": [],
        "cancel_requested": False,
    }


def test_run_view_of_a_fresh_run_has_nulls() -> None:
    view = run_view({"_id": "r", "job_id": "j", "trigger": "schedule", "status": "pending"})
    assert view["attempt"] == 0
    for key in ("scheduled_for", "worker", "started_at", "finished_at", "duration_ms", "lateness_ms", "error",
                "retry_at"):
        assert key in view and view[key] is None


# -- the typed values' rules ------------------------------------------------------


def test_a_stored_null_time_zone_is_shown_as_stored_and_computed_as_utc() -> None:
    job = job_from_doc(job_doc(timezone=None, schedule="0 8 * * *"))
    assert job.timezone is None and job.zone == "UTC"
    assert domain.job_view(job, NOW)["timezone"] is None  # the API shows what is stored
    # every piece of schedule math agrees on it: the next slot, the scheduling state, an update
    slot = datetime(2026, 3, 27, 8, tzinfo=UTC)
    assert job.next_slot(NOW) == (slot, slot)
    assert job.schedule_state(NOW) == {"next_fire_at": slot, "due_at": slot}
    assert domain.job_update(job, {"schedule": "0 9 * * *"}, NOW)["next_fire_at"] == datetime(2026, 3, 27, 9, tzinfo=UTC)
    absent = job_doc()
    del absent["timezone"]
    assert job_from_doc(absent).timezone == "UTC"


def test_schedule_state_of_a_disabled_job_is_not_due() -> None:
    job = job_from_doc(job_doc(enabled=False))
    assert job.schedule_state(NOW) == {"due_at": None}
    assert job.status == "disabled" and not job.lock_acquired(NOW)


def test_new_job_fills_defaults_and_its_first_slot() -> None:
    job = domain.new_job("j", {"name": "J", "schedule": "0 8 * * *", "handler": "noop", "jitter_s": 30}, NOW)
    assert (job.timezone, job.args, job.enabled, job.revision, job.lease_term) == ("UTC", {}, True, 1, 0)
    assert job.misfire_policy == "fire_once" and type(job.misfire_policy) is domain.MisfirePolicy
    assert job.next_fire_at == datetime(2026, 3, 27, 8, tzinfo=UTC)
    assert job.due_at == job.next_fire_at + jitter_offset("j", 30) and job.created_at == job.updated_at == NOW
    off = domain.new_job("k", {"name": "K", "schedule": "0 8 * * *", "handler": "noop", "enabled": False}, NOW)
    assert off.next_fire_at is None and off.due_at is None


def test_new_run_is_not_started_and_reserves_the_leases_token() -> None:
    from cronhive.enums import LeaseScope, Trigger
    from cronhive.leases import Lease

    job = job_from_doc(job_doc())
    lease = Lease(LeaseScope.JOB, "job_x", "run:r", 7, NOW)
    run = domain.new_run(job, "r", Trigger.MANUAL, NOW, NOW, lease)
    assert (run.run_id, run.job_id, run.status, run.attempt, run.lease_token, run.created_at) == (
        "r", "job_x", "pending", 0, 7, NOW)
    assert not run.status.started and not run.status.is_final and not run.scheduled
