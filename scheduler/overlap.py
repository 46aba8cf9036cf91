"""Overlap policy: which of a job's slot runs may be published, and the job-lease
reservation that goes with them (SPEC §4, the run lifecycle contract). Pure.

The decision is taken on the job document as read, and the write that carries it
(`cronhive.slots.JobAdvance`) expects the lease fields to be exactly as read, so it
is as atomic as a lease claim: if a worker released, renewed or claimed the
lease in between, the write matches nothing and the job is planned again.

``forbid`` (default)
    The job lease is *available* when free, expired at ``now``, or held by the
    reservation of one of these very runs (a re-plan after a crash). Then the
    first fired slot reserves it (holder ``run:<run_id>``; a new token unless the
    reservation is already that run's and still valid: `cronhive.leases.successor`,
    the rule every claim follows) and every later slot is ``skipped``; when it is held by
    another run every slot is ``skipped`` (error type ``overlap``).
``buffer_one``
    As ``forbid``, except that one more run may wait for the lease: when
    ``buffered_run_id`` is empty, the next slot that cannot have the lease takes
    that place and is published too (the worker makes it wait).
``allow``
    No job lease: every slot is published.

``fire_all`` under ``forbid``
    Every slot is published: the first reserves the lease when it is available, the
    rest wait for it, oldest first. Not while older slot runs of the job still wait
    (``queued_behind``: a backlog, as after a failover): then none reserves it — a new
    slot holding the lease would wait for the older ones, and they for its reservation
    to expire — and the oldest waiting run takes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from cronhive.domain import Job
from cronhive.enums import ErrorType, LeaseScope, OverlapPolicy
from cronhive.leases import Lease, claimable, duration_ms, reservation_holder, successor
from cronhive.slots import JobAdvance, SlotPlan, SlotRun, slot_run_id


def resolve(job: Job, plan: SlotPlan, now: datetime, job_lease_s: float, *,
            queued_behind: bool = False) -> tuple[list[SlotRun], JobAdvance]:
    """The run of every slot of ``plan`` and the job write that commits them
    (``queued_behind``: older slot runs of this fire_all job have not started yet)."""
    job_id = job.job_id
    runs = [SlotRun(slot_run_id(job_id, s.at), s.at, False, s.type, s.message, covers=plan.covered_by(s.at))
            for s in plan.skipped]
    fire_ids = [(slot_run_id(job_id, at), at) for at in plan.fire]
    mode = job.overlap_policy
    reservation: Lease | None = None
    buffered: str | None = None
    decided = mode.uses_job_lease and bool(fire_ids)
    if decided:
        contended, reservation, buffered = _contend(job, fire_ids, now, job_lease_s, queued_behind=queued_behind)
        runs += contended
    else:
        runs += [SlotRun(run_id, at, True) for run_id, at in fire_ids]
    runs = [replace(run, covers=plan.covered_by(run.slot)) if run.fire else run for run in runs]
    runs.sort(key=lambda run: run.slot)
    fired = sum(1 for run in runs if run.fire)
    next_fire_at, due_at = plan.next_fire_at, plan.due_at
    counted = fired if job.max_fires is not None else 0
    if job.max_fires is not None and job.fires + fired >= job.max_fires:  # max_fires reached: completed
        next_fire_at, due_at = None, None
    advance = JobAdvance(job, next_fire_at, due_at, fired > 0, lease_decided=decided,
                         buffer_decided=decided and mode == OverlapPolicy.BUFFER_ONE, reservation=reservation,
                         buffered_run_id=buffered, fired_counted=counted)
    return runs, advance


def lease_available(job: Job, run_ids: Iterable[str], now: datetime) -> bool:
    """The job lease may be reserved at ``now`` for one of the slot runs ``run_ids``: free,
    expired, or held by the reservation of one of them (a re-plan after a crash)."""
    return claimable(job.lease, {reservation_holder(run_id) for run_id in run_ids}, now)


def _contend(job: Job, fire_ids: list[tuple[str, datetime]], now: datetime,
             job_lease_s: float, *, queued_behind: bool = False) -> tuple[list[SlotRun], Lease | None, str | None]:
    """``forbid``/``buffer_one``: reserve the lease for the first slot when available
    (for a fire_all job, unless older slots wait: ``queued_behind``), buffer one more
    under ``buffer_one``, skip the rest (fire_all: queue them). Returns the runs, the
    reservation made and the run now buffered (None when none)."""
    runs: list[SlotRun] = []
    waiting = list(fire_ids)
    reservation: Lease | None = None
    buffered: str | None = None
    behind = queued_behind and job.queues_slots
    if not behind and lease_available(job, (run_id for run_id, _ in fire_ids), now):
        run_id, at = waiting.pop(0)
        reservation = successor(job.lease, job.lease_term, LeaseScope.JOB, job.job_id, reservation_holder(run_id),
                                run_id, now, duration_ms(job_lease_s))
        runs.append(SlotRun(run_id, at, True, lease_token=reservation.token))
    if job.overlap_policy == OverlapPolicy.BUFFER_ONE and waiting and job.buffered_run_id is None:
        run_id, at = waiting.pop(0)
        buffered = run_id
        runs.append(SlotRun(run_id, at, True))
    if job.queues_slots:  # fire_all under forbid: the rest wait for the lease, oldest first
        runs += [SlotRun(run_id, at, True) for run_id, at in waiting]
        return runs, reservation, buffered
    holder = reservation.holder if reservation is not None else job.lease.holder if job.lease is not None else None
    for run_id, at in waiting:
        runs.append(SlotRun(run_id, at, False, ErrorType.OVERLAP, f"the job's lease is held by {holder} "
                                                                  f"(overlap_policy {job.overlap_policy})"))
    return runs, reservation, buffered
