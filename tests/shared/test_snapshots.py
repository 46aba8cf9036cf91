"""`cronhive.snapshots`: which runs carry their job's snapshot, and its message form. Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cronhive.domain import Job, Notify
from cronhive.enums import MisfirePolicy, NotifyEvent, OverlapPolicy, Trigger
from cronhive.snapshots import QUEUE_VERSION, VERSION, JobSnapshot, snapshot_for

SLOT = datetime(2026, 12, 2, 6, 0, 0, 250_000, tzinfo=UTC)
JOB = Job(job_id="nightly", name="nightly", schedule="0 6 * * *", handler="report", args={"to": ["ops"]},
          timeout_s=60, max_retries=2, revision=4, incarnation="inc1")


def test_a_forbid_slot_run_holding_the_reservation_carries_the_snapshot_and_it_round_trips() -> None:
    snapshot = snapshot_for(JOB, Trigger.SCHEDULE, SLOT, 7)
    assert snapshot == JobSnapshot(job_id="nightly", name="nightly", handler="report", args={"to": ["ops"]},
                                   timeout_s=60, max_retries=2, revision=4, incarnation="inc1", reserved_token=7,
                                   slot=SLOT)
    assert JobSnapshot.from_option(snapshot.to_option()) == snapshot  # milliseconds kept
    assert snapshot.to_option()["v"] == VERSION


def test_the_reserved_slot_of_a_fire_all_job_under_forbid_carries_a_snapshot_that_says_its_slots_queue() -> None:
    snapshot = snapshot_for(replace(JOB, misfire_policy=MisfirePolicy.FIRE_ALL), Trigger.SCHEDULE, SLOT, 7)
    assert snapshot is not None and snapshot.queues_slots
    option = snapshot.to_option()
    assert (option["v"], option["queues"]) == (QUEUE_VERSION, True)  # a worker knowing only VERSION reads the run
    assert JobSnapshot.from_option(option) == snapshot
    assert JobSnapshot.from_option({**option, "v": VERSION}).queues_slots is False  # type: ignore[union-attr]


@pytest.mark.parametrize(("job", "trigger", "token"), [
    (JOB, Trigger.MANUAL, 7),                                                  # not a slot run
    (JOB, Trigger.SCHEDULE, None),                                             # no reservation
    (replace(JOB, overlap_policy=OverlapPolicy.ALLOW), Trigger.SCHEDULE, 7),
    (replace(JOB, overlap_policy=OverlapPolicy.BUFFER_ONE), Trigger.SCHEDULE, 7),
    (replace(JOB, misfire_policy=MisfirePolicy.FIRE_ALL), Trigger.SCHEDULE, None),  # a queued slot behind others
    (replace(JOB, notify=Notify("https://hooks.example/x", (NotifyEvent.RECOVERY,))), Trigger.SCHEDULE, 7),
    (replace(JOB, invalid_reason="schedule: bad"), Trigger.SCHEDULE, 7),
])
def test_runs_whose_start_needs_the_documents_carry_none(job: Job, trigger: Trigger, token: int | None) -> None:
    assert snapshot_for(job, trigger, SLOT, token) is None


@pytest.mark.parametrize("change", [
    {"v": QUEUE_VERSION + 1}, {"token": "7"}, {"token": True}, {"slot": "2026-12-02T06:00:00"}, {"slot": "noon"},
    {"args": None}, {"timeout_s": 1.5},
])
def test_a_snapshot_this_worker_cannot_use_reads_as_none(change: dict[str, object]) -> None:
    option = snapshot_for(JOB, Trigger.SCHEDULE, SLOT, 7).to_option()  # type: ignore[union-attr]
    assert JobSnapshot.from_option({**option, **change}) is None
    missing = dict(option)
    del missing["handler"]
    assert JobSnapshot.from_option(missing) is None
    assert JobSnapshot.from_option(None) is None and JobSnapshot.from_option("x") is None
