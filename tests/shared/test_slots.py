"""shared/slots.py: which slots fire, are skipped or coalesced, and the next slot (SPEC §4).

Pure: every instant is injected, nothing sleeps. Transitions used (2026):

    America/New_York  2026-03-08 02:00 EST -> 03:00 EDT at 07:00Z (spring-forward)
                      2026-11-01 02:00 EDT -> 01:00 EST at 06:00Z (fall-back)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cronhive import cron, domain, slots
from cronhive.domain import MAX_FIRE_ALL, jitter_offset
from cronhive.slots import ENUMERATION_LIMIT, SlotPlan, UncomputableSchedule, latest_fires, slot_run_id
from cronhive.store.documents import job_from_doc

UTC = UTC
MS = timedelta(milliseconds=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def job(schedule: str = "* * * * *", next_fire_at: str | datetime | None = "2026-01-01T10:00", **fields: Any) -> dict[str, Any]:
    """A job document as the store keeps it (``due_at`` = next slot + jitter)."""
    doc: dict[str, Any] = {
        "_id": fields.pop("_id", "job_a"),
        "name": "a job",
        "handler": "noop",
        "schedule": schedule,
        "timezone": fields.pop("timezone", "UTC"),
        "enabled": fields.pop("enabled", True),
        "misfire_policy": "fire_once",
        "misfire_grace_s": 60,
        "jitter_s": 0,
        "revision": 1,
        **fields,
    }
    nxt = utc(next_fire_at) if isinstance(next_fire_at, str) else next_fire_at
    doc["next_fire_at"] = nxt
    if "due_at" not in doc:
        doc["due_at"] = None if nxt is None or not doc["enabled"] else nxt + jitter_offset(doc["_id"], doc["jitter_s"])
    return doc


def plan_slots(doc: dict[str, Any], now: datetime) -> SlotPlan:
    """`cronhive.slots.plan_slots` of the job the document holds (read at the store edge)."""
    return slots.plan_slots(job_from_doc(doc), now)


def job_update(doc: dict[str, Any], changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The fields `cronhive.domain.job_update` sets on the job the document holds."""
    return domain.job_update(job_from_doc(doc), changes, now)


def advance(doc: dict[str, Any], now: datetime) -> tuple[list[datetime], dict[str, Any]]:
    """Plan at ``now`` and apply the plan to the document, as the scheduler does."""
    plan = plan_slots(doc, now)
    return list(plan.fire), {**doc, "next_fire_at": plan.next_fire_at, "due_at": plan.due_at}


# ----------------------------------------------------------------------------- on time


def test_an_on_time_slot_fires_and_the_job_moves_to_the_next_slot() -> None:
    doc = job("*/5 * * * * *", "2026-01-01T10:00:05")
    plan = plan_slots(doc, utc("2026-01-01T10:00:05") + 12 * MS)
    assert plan.advance and plan.fire == (utc("2026-01-01T10:00:05"),) and plan.skipped == ()
    assert plan.next_fire_at == utc("2026-01-01T10:00:10") == plan.due_at
    assert plan.missed == 0
    assert plan.slots == plan.fire


def test_a_slot_not_yet_due_changes_nothing() -> None:
    doc = job("*/5 * * * * *", "2026-01-01T10:00:05")
    plan = plan_slots(doc, utc("2026-01-01T10:00:04.999"))
    assert not plan.advance and plan.fire == () and plan.skipped == ()
    assert plan.next_fire_at == doc["next_fire_at"] and plan.due_at == doc["due_at"]


def test_a_slot_exactly_at_now_is_due() -> None:
    doc = job("*/5 * * * * *", "2026-01-01T10:00:05")
    assert plan_slots(doc, utc("2026-01-01T10:00:05")).fire == (utc("2026-01-01T10:00:05"),)


def test_a_seconds_schedule_walks_every_slot_when_planned_on_time() -> None:
    doc = job("*/20 * * * * *", "2026-01-01T10:00:00")
    fired: list[datetime] = []
    for _ in range(6):
        fire, doc = advance(doc, doc["due_at"] + 3 * MS)
        fired += fire
    assert fired == [utc("2026-01-01T10:00:00") + timedelta(seconds=20 * i) for i in range(6)]


# ----------------------------------------------------------------------------- jitter


def test_jitter_is_deterministic_per_job_and_within_range() -> None:
    offsets = {f"job_{i}": jitter_offset(f"job_{i}", 30) for i in range(200)}
    assert all(timedelta(0) <= value < timedelta(seconds=30) for value in offsets.values())
    assert offsets == {f"job_{i}": jitter_offset(f"job_{i}", 30) for i in range(200)}
    assert len(set(offsets.values())) > 150  # a herd is spread, not stacked
    assert jitter_offset("job_1", 0) == timedelta(0)


def test_a_jittered_slot_is_due_at_slot_plus_jitter_and_keeps_its_slot_instant() -> None:
    doc = job("0 * * * *", "2026-01-01T10:00", _id="herd_7", jitter_s=600)
    offset = jitter_offset("herd_7", 600)
    assert offset > timedelta(0)
    assert doc["due_at"] == utc("2026-01-01T10:00") + offset
    assert not plan_slots(doc, doc["due_at"] - MS).advance
    plan = plan_slots(doc, doc["due_at"] + 5 * MS)
    assert plan.fire == (utc("2026-01-01T10:00"),)  # scheduled_for is the slot, pre-jitter
    assert plan.next_fire_at == utc("2026-01-01T11:00")
    assert plan.due_at == utc("2026-01-01T11:00") + offset  # the same offset every slot


def test_a_stale_due_at_is_corrected_without_firing() -> None:
    doc = job("0 * * * *", "2026-01-01T11:00", due_at=utc("2026-01-01T10:00"))
    plan = plan_slots(doc, utc("2026-01-01T10:30"))
    assert plan.advance and plan.fire == () and plan.skipped == ()
    assert plan.due_at == utc("2026-01-01T11:00")


# ----------------------------------------------------------------------------- DST


def walk(doc: dict[str, Any], steps: int, late: timedelta = 5 * MS) -> list[datetime]:
    fired: list[datetime] = []
    for _ in range(steps):
        fire, doc = advance(doc, doc["due_at"] + late)
        fired += fire
    return fired


def test_fixed_time_in_a_spring_forward_gap_fires_once_right_after_the_gap() -> None:
    doc = job("30 2 * * *", "2026-03-07T07:30", timezone="America/New_York")  # 02:30 EST
    assert walk(doc, 3) == [utc("2026-03-07T07:30"), utc("2026-03-08T07:00"), utc("2026-03-09T06:30")]


def test_a_wildcard_schedule_skips_the_wall_times_a_spring_forward_removes() -> None:
    doc = job("30 * * * *", "2026-03-08T06:30", timezone="America/New_York")  # 01:30 EST
    assert walk(doc, 3) == [utc("2026-03-08T06:30"), utc("2026-03-08T07:30"), utc("2026-03-08T08:30")]


def test_fixed_time_in_a_fall_back_repeat_fires_once_at_the_first_occurrence() -> None:
    doc = job("30 1 * * *", "2026-10-31T05:30", timezone="America/New_York")  # 01:30 EDT
    assert walk(doc, 3) == [utc("2026-10-31T05:30"), utc("2026-11-01T05:30"), utc("2026-11-02T06:30")]


def test_a_wildcard_schedule_fires_both_occurrences_of_a_repeated_hour() -> None:
    doc = job("30 * * * *", "2026-11-01T05:30", timezone="America/New_York")  # 01:30 EDT
    assert walk(doc, 3) == [utc("2026-11-01T05:30"), utc("2026-11-01T06:30"), utc("2026-11-01T07:30")]


def test_catching_up_across_a_fall_back_fires_each_real_occurrence() -> None:
    doc = job("*/30 * * * *", "2026-11-01T05:00", timezone="America/New_York", misfire_policy="fire_all")
    plan = plan_slots(doc, utc("2026-11-01T07:00:00.5"))
    assert plan.fire == tuple(utc(t) for t in ("2026-11-01T05:00", "2026-11-01T05:30", "2026-11-01T06:00",
                                               "2026-11-01T06:30", "2026-11-01T07:00"))
    assert plan.next_fire_at == utc("2026-11-01T07:30")


def test_catching_up_across_a_spring_forward_gap_fires_the_post_gap_instant_once() -> None:
    doc = job("30 2 * * *", "2026-03-07T07:30", timezone="America/New_York", misfire_policy="fire_all")
    plan = plan_slots(doc, utc("2026-03-09T07:00"))
    assert plan.fire == (utc("2026-03-07T07:30"), utc("2026-03-08T07:00"), utc("2026-03-09T06:30"))
    assert plan.next_fire_at == utc("2026-03-10T06:30")


# ----------------------------------------------------------------------------- misfire: fire_once


def test_fire_once_runs_a_late_slot_within_the_grace() -> None:
    plan = plan_slots(job("0 * * * *", "2026-01-01T10:00"), utc("2026-01-01T10:00:59"))
    assert plan.fire == (utc("2026-01-01T10:00"),) and plan.skipped == ()


def test_fire_once_coalesces_missed_slots_into_the_latest_within_grace() -> None:
    plan = plan_slots(job("* * * * *", "2026-01-01T10:00"), utc("2026-01-01T10:05:20"))
    assert plan.fire == (utc("2026-01-01T10:05"),)
    assert plan.skipped == ()  # coalesced: no record of their own
    assert plan.missed == 5
    assert plan.next_fire_at == utc("2026-01-01T10:06")


def test_fire_once_records_one_skipped_run_when_the_latest_is_past_the_grace() -> None:
    doc = job("* * * * *", "2026-01-01T10:00", misfire_grace_s=10)
    plan = plan_slots(doc, utc("2026-01-01T10:05:20"))
    assert plan.fire == ()
    assert [s.at for s in plan.skipped] == [utc("2026-01-01T10:05")]
    assert "misfire grace of 10 s" in plan.skipped[0].message
    assert plan.missed == 6
    assert plan.next_fire_at == utc("2026-01-01T10:06")


def test_fire_once_is_the_default_policy() -> None:
    doc = job("* * * * *", "2026-01-01T10:00")
    del doc["misfire_policy"], doc["misfire_grace_s"]
    plan = plan_slots(doc, utc("2026-01-01T10:03:30"))
    assert plan.fire == (utc("2026-01-01T10:03"),)


# ----------------------------------------------------------------------------- misfire: skip


def test_skip_fires_an_on_time_slot() -> None:
    plan = plan_slots(job("* * * * *", "2026-01-01T10:00", misfire_policy="skip"), utc("2026-01-01T10:00:00.2"))
    assert plan.fire == (utc("2026-01-01T10:00"),) and plan.skipped == ()


def test_skip_records_the_missed_slots_and_runs_the_current_one() -> None:
    plan = plan_slots(job("* * * * *", "2026-01-01T10:00", misfire_policy="skip"), utc("2026-01-01T10:05:20"))
    assert plan.fire == (utc("2026-01-01T10:05"),)
    assert [s.at for s in plan.skipped] == [utc("2026-01-01T10:04")]
    assert "2026-01-01T10:00:00Z to 2026-01-01T10:04:00Z" in plan.skipped[0].message
    assert plan.slots == (utc("2026-01-01T10:04"), utc("2026-01-01T10:05"))


def test_skip_past_the_grace_records_one_skipped_run_and_fires_nothing() -> None:
    doc = job("0 * * * *", "2026-01-01T07:00", misfire_policy="skip")
    plan = plan_slots(doc, utc("2026-01-01T10:30"))
    assert plan.fire == ()
    assert [s.at for s in plan.skipped] == [utc("2026-01-01T10:00")]
    assert plan.next_fire_at == utc("2026-01-01T11:00")


# ----------------------------------------------------------------------------- misfire: fire_all


def test_fire_all_runs_every_missed_slot_in_order() -> None:
    doc = job("* * * * * *", "2026-01-01T10:00:00", misfire_policy="fire_all")
    plan = plan_slots(doc, utc("2026-01-01T10:00:03.5"))
    assert plan.fire == tuple(utc("2026-01-01T10:00:00") + timedelta(seconds=i) for i in range(4))
    assert plan.skipped == () and plan.missed == 0
    assert plan.next_fire_at == utc("2026-01-01T10:00:04")


def test_fire_all_ignores_the_grace() -> None:
    doc = job("0 * * * *", "2026-01-01T07:00", misfire_policy="fire_all", misfire_grace_s=1)
    assert plan_slots(doc, utc("2026-01-01T09:30")).fire == (utc("2026-01-01T07:00"), utc("2026-01-01T08:00"),
                                                           utc("2026-01-01T09:00"))


def test_fire_all_runs_exactly_the_cap_without_a_note() -> None:
    start = utc("2026-01-01T10:00:00")
    doc = job("* * * * * *", start, misfire_policy="fire_all")
    plan = plan_slots(doc, start + timedelta(seconds=MAX_FIRE_ALL - 1, milliseconds=500))
    assert len(plan.fire) == MAX_FIRE_ALL and plan.skipped == ()
    assert plan.fire[0] == start


def test_fire_all_beyond_the_cap_runs_the_latest_100_and_records_the_rest_once() -> None:
    start = utc("2026-01-01T10:00:00")
    doc = job("* * * * * *", start, misfire_policy="fire_all")
    now = start + timedelta(seconds=250, milliseconds=100)
    plan = plan_slots(doc, now)
    assert len(plan.fire) == MAX_FIRE_ALL == 100
    assert plan.fire == tuple(start + timedelta(seconds=151 + i) for i in range(100))
    assert [s.at for s in plan.skipped] == [start]
    assert "at most the latest 100" in plan.skipped[0].message
    assert plan.next_fire_at == start + timedelta(seconds=251)
    assert len(set(plan.slots)) == 101


# ----------------------------------------------------------------------------- long outages, disable, changes


def test_a_year_of_missed_yearly_slots_is_planned_without_enumerating_them() -> None:
    doc = job("0 0 1 1 *", "2020-01-01T00:00")
    plan = plan_slots(doc, utc("2026-06-01T00:00"))
    assert [s.at for s in plan.skipped] == [utc("2026-01-01T00:00")]  # latest, past the grace
    assert plan.next_fire_at == utc("2027-01-01T00:00")


def test_a_month_of_missed_seconds_coalesces_into_the_current_second() -> None:
    doc = job("* * * * * *", "2026-01-01T00:00:00")
    plan = plan_slots(doc, utc("2026-02-01T12:00:00.250"))
    assert plan.fire == (utc("2026-02-01T12:00:00"),)
    assert plan.missed == MAX_FIRE_ALL  # counted up to the cap


def test_a_disabled_job_plans_nothing() -> None:
    doc = job("* * * * *", "2026-01-01T10:00", enabled=False)
    assert doc["due_at"] is None
    plan = plan_slots(doc, utc("2026-01-01T12:00"))
    assert not plan.advance and plan.fire == () and plan.due_at is None


def test_a_disabled_job_left_with_a_due_at_has_it_cleared() -> None:
    doc = job("* * * * *", "2026-01-01T10:00", enabled=False, due_at=utc("2026-01-01T10:00"))
    plan = plan_slots(doc, utc("2026-01-01T12:00"))
    assert plan.advance and plan.fire == () and plan.due_at is None
    assert plan.next_fire_at == utc("2026-01-01T10:00")


def test_re_enabling_applies_the_misfire_policy_to_what_was_missed() -> None:
    created = utc("2026-01-01T09:59:30")
    doc = job("* * * * *", None, _id="pausable", created_at=created)
    doc.update(job_from_doc(doc).schedule_state(created))  # next slot 10:00
    doc.update(job_update(doc, {"enabled": False}, utc("2026-01-01T09:59:40")))
    assert doc["due_at"] is None and doc["next_fire_at"] == utc("2026-01-01T10:00")
    assert not plan_slots(doc, utc("2026-01-01T10:30")).advance
    doc.update(job_update(doc, {"enabled": True}, utc("2026-01-01T10:30:10")))
    assert doc["due_at"] == utc("2026-01-01T10:00")
    plan = plan_slots(doc, utc("2026-01-01T10:30:10"))
    assert plan.fire == (utc("2026-01-01T10:30"),)  # fire_once: the latest, within grace
    all_plan = plan_slots({**doc, "misfire_policy": "fire_all"}, utc("2026-01-01T10:30:10"))
    assert len(all_plan.fire) == 31


def test_a_schedule_change_takes_effect_from_the_next_slot() -> None:
    doc = job("*/10 * * * * *", "2026-01-01T10:00:10", _id="changing")
    fire, doc = advance(doc, utc("2026-01-01T10:00:10.004"))
    assert fire == [utc("2026-01-01T10:00:10")] and doc["next_fire_at"] == utc("2026-01-01T10:00:20")
    doc.update(job_update(doc, {"schedule": "*/3 * * * * *"}, utc("2026-01-01T10:00:11.5")))
    assert doc["next_fire_at"] == utc("2026-01-01T10:00:12")
    assert walk(doc, 3) == [utc("2026-01-01T10:00:12"), utc("2026-01-01T10:00:15"), utc("2026-01-01T10:00:18")]


def test_a_time_zone_change_moves_the_next_slot() -> None:
    doc = job("0 9 * * *", "2026-01-02T09:00", _id="tz")
    doc.update(job_update(doc, {"timezone": "Asia/Tokyo"}, utc("2026-01-01T10:00")))
    assert doc["next_fire_at"] == utc("2026-01-02T00:00")  # 09:00 JST
    assert walk(doc, 1) == [utc("2026-01-02T00:00")]


def test_a_job_with_no_next_slot_yet_starts_from_now_without_firing() -> None:
    doc = job("*/5 * * * * *", None, due_at=utc("2026-01-01T10:00"))
    plan = plan_slots(doc, utc("2026-01-01T10:00:01"))
    assert plan.advance and plan.fire == () and plan.next_fire_at == utc("2026-01-01T10:00:05")


@pytest.mark.parametrize("fields", [
    {"timezone": "Mars/Olympus_Mons"},
    {"schedule": "61 * * * *"},
    {"schedule": "0 0 30 2 *"},
])
def test_a_schedule_that_can_no_longer_be_computed_raises_uncomputable(fields: dict[str, Any]) -> None:
    doc = {**job("* * * * *", "2026-01-01T10:00"), **fields}
    with pytest.raises(UncomputableSchedule) as info:
        plan_slots(doc, utc("2026-01-01T10:00:01"))
    assert "can no longer be computed" in info.value.message


# ----------------------------------------------------------------------------- helpers


def test_slot_run_ids_are_deterministic_per_slot_and_distinct() -> None:
    slot = utc("2026-01-01T10:00:05")
    assert slot_run_id("job_a", slot) == slot_run_id("job_a", slot)
    assert slot_run_id("job_a", slot).startswith("run_20260101_100005_")
    ids = {slot_run_id(f"job_{i}", slot + timedelta(seconds=s)) for i in range(50) for s in range(50)}
    assert len(ids) == 2500


def test_next_slot_adds_the_jitter() -> None:
    doc = job("0 * * * *", "2026-01-01T10:00", _id="jittery", jitter_s=120)
    assert job_from_doc(doc).next_slot(utc("2026-01-01T10:00")) == (
        utc("2026-01-01T11:00"), utc("2026-01-01T11:00") + jitter_offset("jittery", 120))


@pytest.mark.parametrize("expr, tz, after, until", [
    ("* * * * * *", "UTC", "2026-01-01T00:00", "2026-01-01T00:30"),
    ("*/7 * 9 * * *", "Europe/Berlin", "2026-01-01T00:00", "2026-01-03T12:00"),
    ("0 0 1 1 *", "UTC", "2001-01-01T00:00", "2026-06-01T00:00"),
    ("30 * * * *", "America/New_York", "2026-10-31T00:00", "2026-11-02T00:00"),
])
def test_latest_fires_matches_full_enumeration(expr: str, tz: str, after: str, until: str) -> None:
    everything = cron.fires_between(expr, tz, utc(after), utc(until), 100_000)
    assert len(everything) < 100_000
    for count in (1, 2, 100, ENUMERATION_LIMIT + 10):
        assert latest_fires(expr, tz, utc(after), utc(until), count) == everything[-count:]
