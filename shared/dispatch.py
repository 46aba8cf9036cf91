"""Creating a run and handing it to RabbitMQ: the manual-trigger path.

The order makes failure leave nothing half-done:

1. claim the job's run lease for the new run (``holder = run:<run_id>``, the
   reservation the worker later takes over) — unless the job allows overlap;
2. insert the run as ``pending``;
3. publish it by actor name and wait for RabbitMQ's confirm;
4. mark it ``queued`` and note ``last_triggered_at`` on the job.

If step 2 or 3 fails the run is deleted and the lease released, and the error
(`StoreUnavailable` / `BrokerUnavailable`) propagates. Once RabbitMQ confirmed
the message the trigger has succeeded, even if step 4 cannot be written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cronhive.broker import RunPublisher
from cronhive.domain import Job, format_instant, new_run_id
from cronhive.domain import new_run as new_run
from cronhive.enums import LeaseScope, OverlapPolicy, RunStatus, Trigger
from cronhive.errors import JobInvalid, LeaseHeld, Unavailable
from cronhive.leases import Lease, reservation_holder
from cronhive.store.protocols import TriggerStore

log = logging.getLogger("cronhive.dispatch")


@dataclass(frozen=True)
class TriggerResult:
    job_id: str
    run_id: str
    triggered_at: datetime
    lock_acquired: bool


def trigger_job(store: TriggerStore, publisher: RunPublisher, job_id: str, now: datetime,
                lease_s: float) -> TriggerResult:
    """Manually run a job at ``now`` (the database clock; disabled jobs too). Raises
    `JobInvalid` for an invalid job, `LeaseHeld` under ``forbid`` while a run holds the
    lease, and under ``buffer_one`` when a run already waits."""
    job = store.get_job(job_id)
    if job.invalid_reason is not None:
        raise JobInvalid(f"job {job_id!r} is invalid ({job.invalid_reason}); repair it with a PUT before "
                         "triggering it", details={"job_id": job_id, "invalid_reason": job.invalid_reason})
    run_id = new_run_id(now)
    lease: Lease | None = None
    if job.overlap_policy.uses_job_lease:
        lease = store.claim_lease(LeaseScope.JOB, job_id, reservation_holder(run_id), lease_s, now, run_id=run_id)
        if lease is None:
            holder = store.get_job(job_id)  # deleted meanwhile: 404, not a lease conflict
            if job.overlap_policy == OverlapPolicy.FORBID:
                raise _lease_held(store, holder, now, "")
            if not store.reserve_buffer_slot(job_id, run_id):
                raise _lease_held(store, holder, now, " and a run already waits for it")
    try:
        store.insert_run(new_run(job, run_id, Trigger.MANUAL, now, now, lease))
        publisher.publish_run(run_id, job_id)
    except Exception:
        _undo_trigger(store, job_id, run_id, lease)
        raise
    _after_publish(store, job_id, run_id, now)
    log.info("run triggered", extra={"job_id": job_id, "run_id": run_id})
    return TriggerResult(job_id=job_id, run_id=run_id, triggered_at=now, lock_acquired=lease is not None)


def _lease_held(store: TriggerStore, job: Job, now: datetime, waiting: str) -> LeaseHeld:
    """The 409 of a trigger the job's lease refused, saying what holds it: a run under
    way, or a failed run's retry waiting out its backoff (nothing runs then)."""
    details: dict[str, Any] = {"job_id": job.job_id}
    lease = job.lease if job.lease is not None and job.lease.live(now) else None
    run = store.find_run(lease.run_id) if lease is not None and lease.run_id else None
    if run is None:
        return LeaseHeld(f"job {job.job_id!r} is running; its lease is held{waiting}", details=details)
    details["run_id"] = run.run_id
    if run.status == RunStatus.QUEUED and run.retry_at is not None:
        details["retry_at"] = format_instant(run.retry_at)
        return LeaseHeld(f"job {job.job_id!r} is not running: a retry of run {run.run_id} (attempt "
                         f"{run.attempt + 1}) is due at {format_instant(run.retry_at)} and holds the job's "
                         f"lease until it has run{waiting}", details=details)
    return LeaseHeld(f"job {job.job_id!r} is running: run {run.run_id} holds its lease{waiting}", details=details)


def _after_publish(store: TriggerStore, job_id: str, run_id: str, now: datetime) -> None:
    """Mark the run ``queued`` and note the trigger on the job. RabbitMQ has the
    run by now, so a MongoDB failure here does not fail the trigger: the run
    stays ``pending`` (which the scheduler re-publishes; workers run it once)."""
    try:
        store.mark_run_queued(run_id, now)
        store.note_triggered(job_id, now)
    except Unavailable:
        log.warning("run published but not marked queued", extra={"job_id": job_id, "run_id": run_id})


def _undo_trigger(store: TriggerStore, job_id: str, run_id: str, lease: Lease | None) -> None:
    """Best effort: remove what a failed trigger wrote (an expiring lease is the fallback)."""
    try:
        store.delete_run(run_id)
        store.clear_buffer_slot(job_id, run_id)
        if lease is not None:
            store.release_lease(lease)
    except Unavailable:
        log.warning("could not undo a failed trigger; its lease will expire", extra={"job_id": job_id, "run_id": run_id})
