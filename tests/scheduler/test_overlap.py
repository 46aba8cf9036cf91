"""scheduler/overlap.py: forbid, buffer_one and allow decided on the job as read. Pure.

The job is a stored document read through the store edge; each decision is checked
as the write it becomes (`cronhive.store.documents.advance_write`: the conditions
``expect`` and the ``changes`` set)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cronhive.leases import reservation_holder
from cronhive.scheduler import overlap
from cronhive.slots import SkippedSlot, SlotPlan, SlotRun, slot_run_id
from cronhive.store.documents import advance_write, job_from_doc

UTC = UTC
NOW = datetime(2026, 1, 1, 10, 0, 3, tzinfo=UTC)
SLOTS = tuple(datetime(2026, 1, 1, 10, 0, s, tzinfo=UTC) for s in range(3))


def job(policy: str, lease: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"_id": "j", "name": "j", "schedule": "* * * * * *", "handler": "noop", "overlap_policy": policy,
            "revision": 4, "next_fire_at": SLOTS[0], "lease": lease, "lease_term": 7, "buffered_run_id": None,
            **fields}


@dataclass(frozen=True)
class Write:
    expect: dict[str, Any]
    changes: dict[str, Any]
    triggered: bool


def resolve(doc: dict[str, Any], plan: SlotPlan, now: datetime, job_lease_s: float, *,
            queued_behind: bool = False) -> tuple[list[SlotRun], Write]:
    """`overlap.resolve` on the job the document holds; its advance as the write it becomes."""
    runs, advance = overlap.resolve(job_from_doc(doc), plan, now, job_lease_s, queued_behind=queued_behind)
    expect, changes = advance_write(advance)
    return runs, Write(expect, changes, advance.triggered)


def plan(fire: tuple[datetime, ...] = SLOTS, skipped: tuple[SkippedSlot, ...] = ()) -> SlotPlan:
    nxt = datetime(2026, 1, 1, 10, 0, 4, tzinfo=UTC)
    return SlotPlan("j", True, fire, skipped, nxt, nxt)


def held(by: str = "worker:1", expires_in_s: float = 10) -> dict[str, Any]:
    return {"holder": by, "run_id": "run_x", "token": 7, "expires_at": NOW + timedelta(seconds=expires_in_s)}


def test_allow_fires_every_slot_and_leaves_the_lease_alone() -> None:
    runs, advance = resolve(job("allow", held()), plan(), NOW, 30)
    assert [r.fire for r in runs] == [True, True, True]
    assert all(r.lease_token is None for r in runs)
    assert "lease" not in advance.changes and "lease_term" not in advance.expect
    assert advance.expect == {"revision": 4, "next_fire_at": SLOTS[0]}
    assert advance.triggered


def test_forbid_with_a_free_lease_reserves_it_for_the_first_slot_and_skips_the_rest() -> None:
    runs, advance = resolve(job("forbid"), plan(), NOW, 30)
    first = slot_run_id("j", SLOTS[0])
    assert [(r.run_id, r.fire, r.skip_type) for r in runs] == [
        (first, True, None),
        (slot_run_id("j", SLOTS[1]), False, "overlap"),
        (slot_run_id("j", SLOTS[2]), False, "overlap"),
    ]
    assert runs[0].lease_token == 8  # a new holder: the term moves on
    assert advance.changes["lease"] == {"holder": reservation_holder(first), "run_id": first, "token": 8,
                                        "expires_at": NOW + timedelta(seconds=30)}
    assert advance.changes["lease_term"] == 8
    assert advance.expect["lease"] is None and advance.expect["lease_term"] == 7
    assert reservation_holder(first) in runs[1].message


def test_forbid_with_a_held_lease_skips_every_slot_and_expects_the_lease_unchanged() -> None:
    lease = held()
    runs, advance = resolve(job("forbid", lease), plan(SLOTS[:1]), NOW, 30)
    assert [(r.fire, r.skip_type) for r in runs] == [(False, "overlap")]
    assert "worker:1" in runs[0].message
    assert "lease" not in advance.changes
    assert advance.expect["lease.holder"] == "worker:1" and advance.expect["lease.token"] == 7
    assert advance.expect["lease.expires_at"] == lease["expires_at"]
    assert not advance.triggered


def test_forbid_with_an_expired_lease_takes_it() -> None:
    runs, _ = resolve(job("forbid", held(expires_in_s=-1)), plan(SLOTS[:1]), NOW, 30)
    assert runs[0].fire and runs[0].lease_token == 8


def test_forbid_replanning_its_own_reservation_keeps_the_token() -> None:
    first = slot_run_id("j", SLOTS[0])
    mine = {"holder": reservation_holder(first), "run_id": first, "token": 7,
            "expires_at": NOW + timedelta(seconds=5)}
    runs, advance = resolve(job("forbid", mine), plan(SLOTS[:1]), NOW, 30)
    assert runs[0].fire and runs[0].lease_token == 7 and advance.changes["lease_term"] == 7


def test_buffer_one_reserves_one_buffers_one_and_skips_the_rest() -> None:
    runs, advance = resolve(job("buffer_one"), plan(), NOW, 30)
    assert [(r.fire, r.skip_type) for r in runs] == [(True, None), (True, None), (False, "overlap")]
    assert runs[0].lease_token == 8 and runs[1].lease_token is None
    assert advance.changes["buffered_run_id"] == runs[1].run_id
    assert advance.expect["buffered_run_id"] is None


def test_buffer_one_with_a_held_lease_buffers_the_first_slot() -> None:
    runs, advance = resolve(job("buffer_one", held()), plan(SLOTS[:2]), NOW, 30)
    assert [(r.fire, r.skip_type) for r in runs] == [(True, None), (False, "overlap")]
    assert advance.changes["buffered_run_id"] == runs[0].run_id and "lease" not in advance.changes


def test_buffer_one_with_a_run_already_waiting_skips() -> None:
    runs, advance = resolve(job("buffer_one", held(), buffered_run_id="run_waiting"), plan(SLOTS[:1]), NOW, 30)
    assert [(r.fire, r.skip_type) for r in runs] == [(False, "overlap")]
    assert advance.expect["buffered_run_id"] == "run_waiting" and "buffered_run_id" not in advance.changes


def test_misfire_skipped_slots_get_their_records_in_slot_order() -> None:
    note = SkippedSlot(SLOTS[0], "missed")
    runs, advance = resolve(job("forbid"), plan(fire=SLOTS[1:2], skipped=(note,)), NOW, 30)
    assert [(r.slot, r.fire, r.skip_type) for r in runs] == [(SLOTS[0], False, "misfire"), (SLOTS[1], True, None)]
    assert runs[0].message == "missed"
    assert advance.changes["next_fire_at"] == plan().next_fire_at and advance.triggered


def test_a_plan_without_fired_slots_does_not_touch_the_lease() -> None:
    runs, advance = resolve(job("forbid", held()), plan(fire=(), skipped=(SkippedSlot(SLOTS[0], "x"),)), NOW, 30)
    assert [r.fire for r in runs] == [False]
    assert "lease_term" not in advance.expect and "lease" not in advance.changes


def test_fire_all_under_forbid_queues_every_slot_behind_the_first_instead_of_skipping() -> None:
    """After an outage or a failover a fire_all job's catch-up runs one slot after another:
    the first reserves the lease, the rest are published to wait for it (issue 10)."""
    runs, advance = resolve(job("forbid", misfire_policy="fire_all"), plan(), NOW, 30)
    assert [r.fire for r in runs] == [True, True, True]
    assert runs[0].lease_token == 8 and runs[1].lease_token is None and runs[2].lease_token is None
    assert advance.changes["lease"]["holder"] == reservation_holder(slot_run_id("j", SLOTS[0]))


def test_fire_all_under_forbid_behind_older_waiting_slots_reserves_nothing() -> None:
    """Older slot runs of the job wait (a backlog): a free lease stays free for the oldest
    of them to take — a new slot reserving it would wait for them, and they for it."""
    runs, advance = resolve(job("forbid", misfire_policy="fire_all"), plan(), NOW, 30, queued_behind=True)
    assert [r.fire for r in runs] == [True, True, True] and all(r.lease_token is None for r in runs)
    assert "lease" not in advance.changes and advance.triggered
    others, _ = resolve(job("forbid"), plan(), NOW, 30, queued_behind=True)  # only fire_all queues its slots
    assert [r.fire for r in others] == [True, False, False] and others[0].lease_token == 8


def test_fire_all_under_forbid_waits_for_a_lease_another_run_holds() -> None:
    runs, advance = resolve(job("forbid", held(), misfire_policy="fire_all"), plan(), NOW, 30)
    assert [r.fire for r in runs] == [True, True, True] and all(r.lease_token is None for r in runs)
    assert "lease" not in advance.changes
    skipped, _ = resolve(job("forbid", held()), plan(), NOW, 30)  # fire_once/skip keep skipping
    assert [r.fire for r in skipped] == [False, False, False]
