"""What the API's endpoints do, apart from HTTP: validate with the marshmallow
schemas, call the store and the dispatcher, build the views.

The JSON views (`cronhive.api.routes`) and the dashboard (`cronhive.api.ui`) both
call these, so a job created, changed, triggered or previewed from a browser goes
through exactly the code a REST client's request does. Validation failures raise
``marshmallow.ValidationError`` (422), store refusals the domain errors of
`cronhive.errors`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cronhive import cron, metrics
from cronhive.api import schemas
from cronhive.backfill import BackfillResult, backfill_job
from cronhive.dispatch import TriggerResult, trigger_job
from cronhive.domain import Job, Run, RunError, format_instant
from cronhive.enums import NOT_STARTED, ErrorType, Reprocess
from cronhive.errors import Conflict, InvalidSchedule, RunFinished

#: Rounds of read–compare-and-set a cancel tries before answering 409.
MAX_CANCEL_ROUNDS = 5

if TYPE_CHECKING:
    from cronhive.api.app import Services


def create_job(svc: Services, payload: Any) -> tuple[Job, datetime]:
    """Register a job from an API body; the stored document and the instant it was written."""
    fields = schemas.JobCreateSchema.with_handlers(frozenset(svc.handlers.names())).load(payload)
    store = svc.ready_store()
    now = svc.clock.now()
    return store.create_job(fields, now), now


def update_job(svc: Services, job_id: str, payload: Any) -> tuple[Job, datetime]:
    """Apply a partial update (an API ``PUT`` body); the job as stored after it."""
    changes = schemas.JobUpdateSchema.with_handlers(frozenset(svc.handlers.names())).load(payload)
    store = svc.ready_store()
    if ("schedule" in changes) != ("jitter_s" in changes):  # both sent: the schema checked them
        check_jitter_against_stored(store.get_job(job_id), changes)
    if ("start_at" in changes) != ("end_at" in changes):  # both sent: the schema checked them
        stored = store.get_job(job_id)
        schemas.check_bounds(changes.get("start_at", stored.start_at), changes.get("end_at", stored.end_at))
    now = svc.clock.now()
    return store.update_job(job_id, changes, now), now


def check_jitter_against_stored(stored: Job, changes: dict[str, Any]) -> None:
    """A new schedule with the stored jitter, or a new jitter with the stored schedule,
    must keep the jitter below the schedule's shortest interval (422 otherwise). A
    stored schedule that no longer parses is left to the update to replace."""
    schedule = changes.get("schedule", stored.schedule)
    jitter_s = changes.get("jitter_s", stored.jitter_s)
    if not isinstance(schedule, str) or not isinstance(jitter_s, int):
        return
    try:
        schemas.check_jitter(schedule, jitter_s)
    except InvalidSchedule:
        return


def delete_job(svc: Services, job_id: str) -> None:
    svc.ready_store().delete_job(job_id)


def trigger(svc: Services, job_id: str) -> TriggerResult:
    """Run the job now (`cronhive.dispatch.trigger_job`, under its lease rules)."""
    return trigger_job(svc.ready_store(), svc.publisher, job_id, svc.clock.now(), svc.settings.job_lease_s)


def backfill(svc: Services, job_id: str, payload: Any) -> BackfillResult:
    """Run the job's slots of ``[start, end)`` again (`cronhive.backfill.backfill_job`)."""
    body = schemas.BackfillSchema().load(payload)
    reprocess = Reprocess(body.get("reprocess", Reprocess.MISSING))
    result = backfill_job(svc.ready_store(), svc.publisher, job_id, body["start"], body["end"], reprocess,
                          svc.clock.now())
    metrics.API_BACKFILL_RUNS.inc(result.created)
    return result


def backfill_view(result: BackfillResult) -> dict[str, Any]:
    return {"job_id": result.job_id, "backfill_id": result.backfill_id, "slots": result.slots,
            "created": result.created}


def cancel_run(svc: Services, run_id: str) -> Run:
    """Cancel a run: one not started (``pending``, ``queued``, a retry waiting) is recorded
    ``cancelled`` at once and its job-lease reservation freed; a running one gets
    ``cancel_requested`` (its worker interrupts the handler and records ``cancelled``).
    A finished run raises `RunFinished` (409); an unknown one `RunNotFound` (404)."""
    store = svc.ready_store()
    for _ in range(MAX_CANCEL_ROUNDS):
        run = store.get_run(run_id)
        if run.status.is_final:
            raise RunFinished(f"run {run_id!r} already ended {run.status}; it cannot be cancelled",
                              details={"run_id": run_id, "status": run.status})
        now = svc.clock.now()
        if run.status in NOT_STARTED:
            error = RunError(ErrorType.CANCELLED, "cancelled before it started")
            if store.cancel_unstarted_run(run, error, now):
                store.release_reservation(run.job_id, run_id)
                metrics.API_RUNS_CANCELLED.labels(from_status=run.status).inc()
                return store.get_run(run_id)
        elif run.cancel_requested:
            return run
        elif store.request_cancel(run, now):
            metrics.API_RUNS_CANCELLED.labels(from_status=run.status).inc()
            return store.get_run(run_id)
    raise Conflict(f"run {run_id!r} is changing concurrently; retry", details={"run_id": run_id})


def trigger_view(result: TriggerResult) -> dict[str, Any]:
    return {
        "job_id": result.job_id,
        "triggered_at": format_instant(result.triggered_at),
        "lock_acquired": result.lock_acquired,
        "run_id": result.run_id,
    }


def preview_fires(svc: Services, payload: Any) -> tuple[str, str, list[datetime]]:
    """The next fire instants of ``{schedule, timezone?, after?, count?}`` (`cron.upcoming`):
    the normalized schedule, the zone and the instants (UTC)."""
    body = schemas.PreviewSchema().load(payload)
    tz = body.get("timezone", "UTC")
    after = body.get("after") or svc.clock.now()
    return body["schedule"], tz, cron.upcoming(body["schedule"], tz, after, body.get("count", 10))
