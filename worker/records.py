"""The writes that end an attempt, shared by the middleware and the reaper.

Every run write here is fenced on the attempt (``attempt`` and ``lease_token``);
the job's ``last_run_*`` are written in the same update that releases the job
lease, filtered on that lease's holder and token.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from dramatiq import Message

from cronhive import metrics
from cronhive.broker import RUN_NEXT_ACTOR, hand_on_queue, run_message
from cronhive.domain import AttemptEnd, AttemptRecord, Job, Run, RunError, notifications_for
from cronhive.enums import ErrorType, LeaseScope, NotifyEvent, RunStatus
from cronhive.snapshots import JobSnapshot
from cronhive.store.protocols import WorkerStore
from cronhive.worker.attempts import bounded_error

log = logging.getLogger("cronhive.worker.records")

#: Message option of the messages workers publish themselves: the attempt they follow.
AFTER_ATTEMPT = "cronhive_after_attempt"
#: Message option of a hand-on (`RunLifecycle._hand_on`): the run was the job's oldest
#: waiting slot run when the lease was freed for it.
HANDED_ON = "cronhive_handed_on"


def follow_up_message(queue: str, run_id: str, job_id: str, after_attempt: int | None) -> Message[Any]:
    """A message for ``run_id`` that follows attempt ``after_attempt`` (a retry, a recovery,
    a message that waits): see `worker.decisions`."""
    message = run_message(queue, run_id, job_id)
    if after_attempt is None:
        return message
    return message.copy(options={AFTER_ATTEMPT: after_attempt})


def hand_on_message(queue: str, run_id: str, job_id: str, snapshot: JobSnapshot | None = None) -> Message[Any]:
    """The message a run that freed its job's lease publishes for the job's oldest waiting
    slot run ``run_id``, on the hand-on queue of runs queue ``queue`` (workers take it
    first: `cronhive.broker.RUN_NEXT_ACTOR`). Nothing older than it can be waiting later
    (slot runs are made in slot order, and an older run that starts never waits again as
    a first attempt), so its delivery does not count the older ones again. With the
    lease handed on as the run's reservation (`JobStore.hand_on_recording`) it carries
    the job's snapshot, and the run starts in one write (`cronhive.snapshots`)."""
    message = run_message(hand_on_queue(queue), run_id, job_id, snapshot)
    return message.copy(actor_name=RUN_NEXT_ACTOR, options={**message.options, HANDED_ON: True})


def attempt_record(
    number: int, worker: str | None, status: RunStatus, started_at: datetime | None, finished_at: datetime | None,
    duration_ms: int | None, error: RunError | None,
) -> AttemptRecord:
    """One entry of the run's ``attempts`` history."""
    return AttemptRecord(attempt=number, worker=worker, status=status, started_at=started_at,
                         finished_at=finished_at, duration_ms=duration_ms, error=error)


def dead_attempt_record(run: Run, reason: str) -> AttemptRecord:
    """The record of the attempt a run's dead worker left behind."""
    return attempt_record(run.attempt, run.worker, RunStatus.ABANDONED, run.started_at, None, None,
                          bounded_error(ErrorType.LEASE_EXPIRED, reason))


def abandon_dead_attempt(store: WorkerStore, run: Run, now: datetime, reason: str, job: Job | None = None, *,
                         cancelled: bool = False) -> bool:
    """``running`` → ``abandoned`` (``cancelled`` when a cancel was requested) for the
    run's current attempt, whose worker stopped renewing its lease (an abandoned run
    with the job's ``failure`` notification, if it asks for one); then the job's
    outcome, releasing the dead attempt's job lease if it is still in place. False when
    the run changed meanwhile (another attempt started, or someone else recorded it)."""
    own_lease = run.lease_scope == LeaseScope.RUN
    status = RunStatus.CANCELLED if cancelled else RunStatus.ABANDONED
    error = bounded_error(ErrorType.CANCELLED if cancelled else ErrorType.ABANDONED, reason)
    notify = () if cancelled else notifications_for(job.notify if job else None, NotifyEvent.FAILURE,
                                                    job.name if job else None, now)
    end = AttemptEnd(status, error, finished_at=now, releases_run_lease=own_lease, notifications=notify)
    if not store.finish_run_attempt(run.run_id, run.attempt, run.lease_token, end, dead_attempt_record(run, reason)):
        return False
    lease = None if own_lease else run.attempt_lease()
    store.record_job_outcome(run.job_id, run.run_id, status, None, lease, run.job_incarnation)
    metrics.WORKER_RUNS.labels(outcome=status).inc()
    log.warning("run %s: %s", status, reason,
                extra={"job_id": run.job_id, "run_id": run.run_id, "attempt": run.attempt, "worker": run.worker})
    return True
