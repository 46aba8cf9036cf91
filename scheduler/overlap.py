"""Overlap policy: which of a job's slot runs may be published, and the job-lease
reservation that goes with them (SPEC §4, the run lifecycle contract). Pure.

The decision is taken on the job document as read, and the write that carries it
(`cronhive.slots.JobAdvance`) expects the lease fields to be exactly as read, so it
is as atomic as `cronhive.leases.claim`: if a worker released, renewed or claimed the
lease in between, the write matches nothing and the job is planned again.

``forbid`` (default)
    The job lease is *available* when free, expired at ``now``, or held by the
    reservation of one of these very runs (a re-plan after a crash). Then the
    first fired slot reserves it (holder ``run:<run_id>``; a new token unless the
    reservation is already that run's and still valid, exactly as
    `cronhive.leases.claim`) and every later slot is ``skipped``; when it is held by
    another run every slot is ``skipped`` (error type ``overlap``).
``buffer_one``
    As ``forbid``, except that one more run may wait for the lease: when
    ``buffered_run_id`` is empty, the next slot that cannot have the lease takes
    that place and is published too (the worker makes it wait).
``allow``
    No job lease: every slot is published.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cronhive.dispatch import reservation_holder
from cronhive.enums import ErrorType, OverlapPolicy
from cronhive.slots import JobAdvance, SlotPlan, SlotRun, policy, slot_run_id


def lease_expectation(job: dict[str, Any]) -> dict[str, Any]:
    """The lease fields as read, for a write that must find them unchanged."""
    lease = job.get("lease")
    expect: dict[str, Any] = {"lease_term": job.get("lease_term")}
    if not lease:
        expect["lease"] = lease  # None (or missing), exactly as read
    else:
        expect.update({"lease.holder": lease.get("holder"), "lease.token": lease.get("token"),
                       "lease.expires_at": lease.get("expires_at")})
    return expect


def lease_available(job: dict[str, Any], holders: set[str], now: datetime) -> bool:
    """Free, expired at ``now``, or held by one of ``holders``."""
    lease = job.get("lease")
    return not lease or lease.get("expires_at") is None or lease["expires_at"] <= now or lease.get("holder") in holders


def resolve(job: dict[str, Any], plan: SlotPlan, now: datetime, job_lease_s: float) -> tuple[list[SlotRun], JobAdvance]:
    """The run of every slot of ``plan`` and the job write that commits them."""
    job_id = job["_id"]
    runs = [SlotRun(slot_run_id(job_id, s.at), s.at, False, ErrorType.MISFIRE, s.message) for s in plan.skipped]
    expect: dict[str, Any] = {"revision": job.get("revision"), "next_fire_at": job.get("next_fire_at")}
    changes: dict[str, Any] = {"next_fire_at": plan.next_fire_at, "due_at": plan.due_at}
    fire_ids = [(slot_run_id(job_id, at), at) for at in plan.fire]
    mode = str(policy(job, "overlap_policy"))
    if mode == OverlapPolicy.ALLOW or not fire_ids:
        runs += [SlotRun(run_id, at, True) for run_id, at in fire_ids]
    else:
        expect.update(lease_expectation(job))
        runs += _contend(job, fire_ids, mode, now, job_lease_s, changes)
        if mode == OverlapPolicy.BUFFER_ONE:
            expect["buffered_run_id"] = job.get("buffered_run_id")
    runs.sort(key=lambda run: run.slot)
    return runs, JobAdvance(job_id, expect, changes, any(run.fire for run in runs))


def _contend(job: dict[str, Any], fire_ids: list[tuple[str, datetime]], mode: str, now: datetime,
             job_lease_s: float, changes: dict[str, Any]) -> list[SlotRun]:
    """``forbid``/``buffer_one``: reserve the lease for the first slot when available,
    buffer one more under ``buffer_one``, skip the rest. Fills ``changes``."""
    runs: list[SlotRun] = []
    waiting = list(fire_ids)
    holders = {reservation_holder(run_id) for run_id, _ in fire_ids}
    if lease_available(job, holders, now):
        run_id, at = waiting.pop(0)
        token = _reserve(job, run_id, now, job_lease_s, changes)
        runs.append(SlotRun(run_id, at, True, lease_token=token))
    if mode == OverlapPolicy.BUFFER_ONE and waiting and job.get("buffered_run_id") is None:
        run_id, at = waiting.pop(0)
        changes["buffered_run_id"] = run_id
        runs.append(SlotRun(run_id, at, True))
    held_by = (job.get("lease") or {}).get("holder")
    for run_id, at in waiting:
        holder = changes["lease"]["holder"] if "lease" in changes else held_by
        runs.append(SlotRun(run_id, at, False, ErrorType.OVERLAP, f"the job's lease is held by {holder} "
                                                          f"(overlap_policy {mode})"))
    return runs


def _reserve(job: dict[str, Any], run_id: str, now: datetime, job_lease_s: float, changes: dict[str, Any]) -> int:
    """Reserve the job lease for ``run_id`` (as `cronhive.leases.claim` would); its token."""
    holder = reservation_holder(run_id)
    lease = job.get("lease") or {}
    term = int(job.get("lease_term") or 0)
    still_mine = lease.get("holder") == holder and lease.get("expires_at") is not None and lease["expires_at"] > now
    token = term if still_mine else term + 1
    changes["lease_term"] = token
    changes["lease"] = {"holder": holder, "run_id": run_id, "token": token,
                        "expires_at": now + timedelta(seconds=job_lease_s)}
    return token
