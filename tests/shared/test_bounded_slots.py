"""Bounded schedules in the scheduler's pure slot logic (`cronhive.slots`,
`cronhive.scheduler.overlap`, `cronhive.domain`): no slot before ``start_at`` or
at/after ``end_at`` (DST changes in Europe/Berlin included), at most ``max_fires``
fired (skipped slots do not count), ``completed`` when exhausted, active again when
a change extends the bounds."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from cronhive import domain, slots
from cronhive.domain import Job, job_view, new_job
from cronhive.enums import JobStatus, LeaseScope
from cronhive.leases import Lease
from cronhive.scheduler import overlap
from tests.shared.test_slots import MS, utc

NOW = utc("2026-03-20T00:00")


def bounded(schedule: str, now: datetime = NOW, **fields: Any) -> Job:
    return new_job("bounded", {"name": "bounded", "schedule": schedule, "handler": "noop", **fields}, now)


def walk(job: Job, steps: int, late: timedelta = 5 * MS) -> tuple[list[datetime], Job]:
    """Plan each due slot just after it is due and apply the advance, as the scheduler does."""
    fired: list[datetime] = []
    for _ in range(steps):
        if job.due_at is None:
            break
        plan = slots.plan_slots(job, job.due_at + late)
        runs, advance = overlap.resolve(job, plan, job.due_at + late, 30)
        fired += [run.slot for run in runs if run.fire]
        job = replace(job, next_fire_at=advance.next_fire_at, due_at=advance.due_at,
                      fires=job.fires + advance.fired_counted, lease=None)
    return fired, job


def test_no_slot_before_start_at_and_none_at_or_after_end_at_across_the_spring_change() -> None:
    # 02:30 Berlin does not exist on 2026-03-29: that day's slot is 03:00 CEST (01:00Z)
    job = bounded("30 2 * * *", timezone="Europe/Berlin", start_at=utc("2026-03-28T12:00"),
                  end_at=utc("2026-03-31T00:30"))
    assert job.next_fire_at == utc("2026-03-29T01:00")
    fired, job = walk(job, 5)
    assert fired == [utc("2026-03-29T01:00"), utc("2026-03-30T00:30")]  # 03-31 00:30Z is end_at itself
    assert (job.next_fire_at, job.due_at) == (None, None)
    assert job.status == JobStatus.COMPLETED and job_view(job, NOW)["next_trigger_at"] is None


def test_start_at_on_the_second_occurrence_of_a_repeated_hour_skips_the_first() -> None:
    # 2026-10-25: 02:00 CEST is 00:00Z, 02:00 CET is 01:00Z
    job = bounded("0 * * * *", now=utc("2026-10-24T22:00"), timezone="Europe/Berlin",
                  start_at=utc("2026-10-25T01:00"), end_at=utc("2026-10-25T03:00"))
    fired, job = walk(job, 5)
    assert fired == [utc("2026-10-25T01:00"), utc("2026-10-25T02:00")]
    assert job.completed


def test_a_slot_exactly_at_start_at_is_in_bounds() -> None:
    job = bounded("0 6 * * *", start_at=utc("2026-04-01T06:00"))
    assert job.next_fire_at == utc("2026-04-01T06:00") and not job.bounded  # start_at alone never ends it
    assert job.status == JobStatus.ACTIVE


def test_a_catch_up_stops_at_end_at() -> None:
    job = bounded("0 * * * *", misfire_policy="fire_all", end_at=utc("2026-03-20T03:00"))
    plan = slots.plan_slots(job, utc("2026-03-20T05:00:01"))  # five hourly slots were missed
    assert plan.fire == (utc("2026-03-20T01:00"), utc("2026-03-20T02:00"))
    assert (plan.next_fire_at, plan.due_at) == (None, None)


def test_max_fires_counts_fired_slots_in_the_advance_write() -> None:
    job = bounded("*/2 * * * * *", max_fires=3)
    fired, done = walk(job, 10)
    assert len(fired) == 3 and fired == [job.next_fire_at + timedelta(seconds=2 * i) for i in range(3)]  # type: ignore[operator]
    assert done.fires == 3 and done.fires_left == 0 and done.completed
    view = job_view(done, NOW)
    assert (view["status"], view["fires_left"], view["next_trigger_at"], view["max_fires"]) == ("completed", 0, None, 3)


def test_a_catch_up_fires_at_most_the_fires_left_oldest_first() -> None:
    job = replace(bounded("0 * * * *", misfire_policy="fire_all", overlap_policy="allow", max_fires=5), fires=3)
    plan = slots.plan_slots(job, utc("2026-03-20T05:00:01"))
    assert plan.fire == (utc("2026-03-20T01:00"), utc("2026-03-20T02:00"))
    _, advance = overlap.resolve(job, plan, utc("2026-03-20T05:00:01"), 30)
    assert advance.fired_counted == 2 and (advance.next_fire_at, advance.due_at) == (None, None)


def test_skipped_slots_do_not_count() -> None:
    job = bounded("0 * * * *", max_fires=2)
    held = Lease(LeaseScope.JOB, "bounded", "run:other", 7, utc("2026-03-20T09:00"), "other")
    busy = replace(job, lease=held, lease_term=7)
    now = job.due_at + MS  # type: ignore[operator]
    runs, advance = overlap.resolve(busy, slots.plan_slots(busy, now), now, 30)
    assert [run.fire for run in runs] == [False]  # forbid: skipped (overlap)
    assert advance.fired_counted == 0 and advance.next_fire_at == utc("2026-03-20T02:00")


def test_an_unbounded_job_counts_nothing_and_shows_no_fires_left() -> None:
    job = bounded("0 * * * *")
    _, after = walk(job, 3)
    assert after.fires == 0 and after.fires_left is None and after.status == JobStatus.ACTIVE


def test_a_change_that_extends_the_bounds_makes_a_completed_job_active_again() -> None:
    _, done = walk(bounded("0 * * * *", max_fires=2), 5)
    assert done.completed
    later = utc("2026-03-20T10:30")
    update = domain.job_update(done, {"max_fires": 4}, later)
    extended = replace(done, **{key: value for key, value in update.items() if key != "updated_at"})
    assert extended.status == JobStatus.ACTIVE and extended.next_fire_at == utc("2026-03-20T11:00")
    assert extended.fires_left == 2
    ended = bounded("0 * * * *", end_at=utc("2026-03-20T02:00"))
    _, ended = walk(ended, 5)
    assert ended.completed
    reopened = domain.job_update(ended, {"end_at": None}, later)
    assert reopened["next_fire_at"] == utc("2026-03-20T11:00") and reopened["due_at"] is not None


def test_setting_max_fires_on_an_unbounded_job_counts_from_then() -> None:
    job = replace(bounded("0 * * * *"), fires=0)
    update = domain.job_update(job, {"max_fires": 1}, NOW)
    assert update["fires"] == 0 and update["max_fires"] == 1
    assert "fires" not in domain.job_update(replace(job, max_fires=3, fires=2), {"max_fires": 5}, NOW)


def test_a_job_created_past_its_end_is_completed_at_once() -> None:
    job = bounded("0 * * * *", end_at=utc("2026-03-19T00:00"), start_at=utc("2026-03-18T00:00"))
    assert job.completed and (job.next_fire_at, job.due_at) == (None, None)
    assert bounded("0 * * * *", enabled=False, end_at=utc("2026-03-19T00:00")).status == JobStatus.DISABLED
