"""shared/slots.py with maintenance windows: a due slot inside an open window naming
the job is recorded skipped (type maintenance) and never replayed by the misfire
policy; the runs that stand for coalesced or skipped slots say which (covers)."""

from __future__ import annotations

from datetime import UTC, datetime

from cronhive.enums import ErrorType
from cronhive.slots import plan_slots
from cronhive.store.documents import job_from_doc
from cronhive.windows import MaintenanceWindow
from tests.shared.test_slots import job, utc


def window(start: str, end: str, tags: tuple[str, ...] = ("ops",), job_ids: tuple[str, ...] = ()) -> MaintenanceWindow:
    return MaintenanceWindow("mnt_1", utc(start), utc(end), tags=tags, job_ids=job_ids)


def test_a_due_slot_inside_a_window_is_skipped_as_maintenance() -> None:
    j = job_from_doc(job(tags=["ops"]))
    plan = plan_slots(j, utc("2026-01-01T10:00:00.010"), [window("2026-01-01T09:00", "2026-01-01T11:00")])
    assert plan.fire == () and [(s.at, s.type) for s in plan.skipped] == [(utc("2026-01-01T10:00"), ErrorType.MAINTENANCE)]
    assert plan.next_fire_at == utc("2026-01-01T10:01") and plan.missed == 0


def test_windows_that_do_not_name_the_job_or_do_not_hold_the_slot_change_nothing() -> None:
    j = job_from_doc(job(tags=["ops"]))
    now = utc("2026-01-01T10:00:00.010")
    for other in (window("2026-01-01T09:00", "2026-01-01T11:00", tags=("billing",)),
                  window("2026-01-01T09:00", "2026-01-01T11:00", tags=(), job_ids=("job_b",)),
                  window("2026-01-01T09:00", "2026-01-01T10:00")):  # the end is exclusive
        assert plan_slots(j, now, [other]) == plan_slots(j, now)
    by_id = plan_slots(j, now, [window("2026-01-01T09:00", "2026-01-01T11:00", tags=(), job_ids=("job_a",))])
    assert by_id.fire == () and by_id.skipped[0].type == ErrorType.MAINTENANCE


def test_fire_all_after_an_outage_across_a_window_runs_only_the_slots_outside_it() -> None:
    j = job_from_doc(job(misfire_policy="fire_all", tags=["ops"]))  # waits for 10:00; the leader was away 10 minutes
    plan = plan_slots(j, utc("2026-01-01T10:09:30"), [window("2026-01-01T10:03", "2026-01-01T10:06")])
    assert [at.minute for at in plan.fire] == [0, 1, 2, 6, 7, 8, 9]
    assert [(s.at.minute, s.type) for s in plan.skipped] == [(m, ErrorType.MAINTENANCE) for m in (3, 4, 5)]
    assert plan.covers == ()


def test_fire_once_after_an_outage_never_fires_a_slot_inside_the_window() -> None:
    j = job_from_doc(job(tags=["ops"]))
    # the latest due slot (10:09) is inside the window: nothing fires, every due slot inside is recorded
    inside = plan_slots(j, utc("2026-01-01T10:09:30"), [window("2026-01-01T10:05", "2026-01-01T11:00")])
    assert inside.fire == ()
    assert [s.at.minute for s in inside.skipped if s.type == ErrorType.MAINTENANCE] == [5, 6, 7, 8, 9]
    # the window ended before the latest slot: that one runs and stands for the older ones outside the window
    after = plan_slots(j, utc("2026-01-01T10:09:30"), [window("2026-01-01T10:03", "2026-01-01T10:06")])
    assert [at.minute for at in after.fire] == [9]
    assert [s.at.minute for s in after.skipped] == [3, 4, 5]
    assert after.covers == ((utc("2026-01-01T10:09"), utc("2026-01-01T10:00"), utc("2026-01-01T10:09")),)


def test_covers_of_fire_once_skip_and_fire_all() -> None:
    now = utc("2026-01-01T10:09:30")
    once = plan_slots(job_from_doc(job()), now)
    assert once.fire == (utc("2026-01-01T10:09"),)
    assert once.covered_by(utc("2026-01-01T10:09")) == (utc("2026-01-01T10:00"), utc("2026-01-01T10:09"))
    skip = plan_slots(job_from_doc(job(misfire_policy="skip")), now)
    assert skip.covered_by(utc("2026-01-01T10:08")) == (utc("2026-01-01T10:00"), utc("2026-01-01T10:08"))
    late = plan_slots(job_from_doc(job(misfire_policy="skip", misfire_grace_s=10)), now)  # 10:09 is 30 s late
    assert late.fire == () and late.covered_by(utc("2026-01-01T10:09")) == (utc("2026-01-01T10:00"),
                                                                           utc("2026-01-01T10:09"))
    one = plan_slots(job_from_doc(job()), utc("2026-01-01T10:00:00.010"))
    assert one.covers == ()
    far = plan_slots(job_from_doc(job("* * * * * *", misfire_policy="fire_all")), utc("2026-01-01T10:10:00"))
    assert len(far.fire) == 100 and far.covered_by(utc("2026-01-01T10:00")) == (utc("2026-01-01T10:00"), far.fire[0])
    assert datetime(2026, 1, 1, tzinfo=UTC) < far.fire[0]
