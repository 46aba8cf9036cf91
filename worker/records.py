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
from cronhive.broker import run_message
from cronhive.enums import ErrorType
from cronhive.leases import Lease
from cronhive.store import MongoStore
from cronhive.worker.attempts import ABANDONED, JOB_SCOPE, RUN_SCOPE, bounded_error

log = logging.getLogger("cronhive.worker.records")

#: Message option of the messages workers publish themselves: the attempt they follow.
AFTER_ATTEMPT = "cronhive_after_attempt"


def follow_up_message(queue: str, run_id: str, job_id: str, after_attempt: int | None) -> Message:
    """A message for ``run_id`` that follows attempt ``after_attempt`` (a retry, a recovery,
    a message that waits): see `worker.decisions`."""
    message = run_message(queue, run_id, job_id)
    if after_attempt is None:
        return message
    return message.copy(options={AFTER_ATTEMPT: after_attempt})


def attempt_record(
    number: int, worker: str | None, status: str, started_at: datetime | None, finished_at: datetime | None,
    duration_ms: int | None, error: dict[str, str] | None,
) -> dict[str, Any]:
    """One entry of the run's ``attempts`` history."""
    return {
        "attempt": number,
        "worker": worker,
        "status": status,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_ms": duration_ms,
        "error": error,
    }


def dead_attempt_record(run: dict[str, Any], reason: str) -> dict[str, Any]:
    """The record of the attempt a run's dead worker left behind."""
    return attempt_record(int(run.get("attempt") or 0), run.get("worker"), ABANDONED, run.get("started_at"), None,
                          None, bounded_error(ErrorType.LEASE_EXPIRED, reason))


def stored_lease(run: dict[str, Any]) -> Lease | None:
    """The lease the run's current attempt was given (to release it if still in place)."""
    if run.get("lease_holder") is None or run.get("lease_token") is None:
        return None
    doc_id = run["_id"] if run.get("lease_scope") == RUN_SCOPE else run["job_id"]
    return Lease(doc_id=doc_id, holder=run["lease_holder"], token=int(run["lease_token"]),
                 expires_at=datetime.min, run_id=run["_id"])


def abandon_dead_attempt(store: MongoStore, run: dict[str, Any], now: datetime, reason: str) -> bool:
    """``running`` → ``abandoned`` for the run's current attempt, whose worker stopped
    renewing its lease; then the job's outcome, releasing the dead attempt's job lease
    if it is still in place. False when the run changed meanwhile (another attempt
    started, or someone else recorded it)."""
    error = bounded_error(ErrorType.ABANDONED, reason)
    fields: dict[str, Any] = {"status": ABANDONED, "finished_at": now, "error": error, "retry_at": None}
    scope = run.get("lease_scope") or JOB_SCOPE
    if scope == RUN_SCOPE:
        fields["lease"] = None
    record = dead_attempt_record(run, reason)
    if not store.finish_run_attempt(run["_id"], int(run.get("attempt") or 0), run.get("lease_token"), fields, record):
        return False
    lease = stored_lease(run) if scope == JOB_SCOPE else None
    store.record_job_outcome(run["job_id"], run["_id"], ABANDONED, None, lease)
    metrics.WORKER_RUNS.labels(outcome=ABANDONED).inc()
    log.warning("run abandoned: %s", reason,
                extra={"job_id": run["job_id"], "run_id": run["_id"], "attempt": run.get("attempt"),
                       "worker": run.get("worker")})
    return True
