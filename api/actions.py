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

import marshmallow

from cronhive import cron, ledger, metrics
from cronhive.api import schemas
from cronhive.backfill import BackfillResult, backfill_job
from cronhive.dispatch import TriggerResult, trigger_job
from cronhive.domain import Job, Run, RunError, format_instant, job_view
from cronhive.enums import NOT_STARTED, ErrorType, JobStatus, Reprocess
from cronhive.errors import Conflict, InvalidSchedule, RunFinished
from cronhive.ledger import LedgerSlot
from cronhive.windows import MaintenanceWindow, new_maintenance_id, paused_until

#: Rounds of read–compare-and-set a cancel tries before answering 409.
MAX_CANCEL_ROUNDS = 5

if TYPE_CHECKING:
    from cronhive.api.app import Services


def create_job(svc: Services, payload: Any, *, actor: str | None = None) -> tuple[Job, datetime]:
    """Register a job from an API body; the stored document and the instant it was written.
    ``actor``: who asked (the name its revision records)."""
    fields = schemas.JobCreateSchema.with_handlers(frozenset(svc.handlers.names()), svc.guard).load(payload)
    store = svc.ready_store()
    now = svc.clock.now()
    return store.create_job(fields, now, actor=actor), now


def update_job(svc: Services, job_id: str, payload: Any, *, actor: str | None = None,
               expected_revision: int | None = None) -> tuple[Job, datetime]:
    """Apply a partial update (an API ``PUT`` body); the job as stored after it.
    ``expected_revision`` (``If-Match``): `PreconditionFailed` unless the job is at it."""
    changes = schemas.JobUpdateSchema.with_handlers(frozenset(svc.handlers.names()), svc.guard).load(payload)
    store = svc.ready_store()
    if ("schedule" in changes) != ("jitter_s" in changes):  # both sent: the schema checked them
        check_jitter_against_stored(store.get_job(job_id), changes)
    if ("args" in changes) != ("handler" in changes):  # one of them with the stored other one
        stored = store.get_job(job_id)
        schemas.check_destinations({key: changes[key] for key in ("handler", "args") if key in changes}, svc.guard,
                                   handler=stored.handler, args=stored.args)
    if ("start_at" in changes) != ("end_at" in changes):  # both sent: the schema checked them
        stored = store.get_job(job_id)
        schemas.check_bounds(changes.get("start_at", stored.start_at), changes.get("end_at", stored.end_at))
    now = svc.clock.now()
    return store.update_job(job_id, changes, now, actor=actor, expected_revision=expected_revision), now


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


def delete_job(svc: Services, job_id: str, *, actor: str | None = None, expected_revision: int | None = None) -> None:
    svc.ready_store().delete_job(job_id, svc.clock.now(), actor=actor, expected_revision=expected_revision)


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


def job_views(svc: Services, jobs: list[Job], now: datetime) -> list[dict[str, Any]]:
    """The API's views of ``jobs`` at ``now``, each ``paused`` while an open maintenance
    window names it (the open windows are read once, whatever the number of jobs)."""
    windows = svc.ready_store().open_windows(now) if jobs else []
    return [job_view(job, now, paused_until(job, windows, now)) for job in jobs]


def list_jobs(svc: Services, page: int, limit: int, *, status: str | None, handler: str | None,
              tag: str | None) -> tuple[list[Job], int, list[dict[str, Any]]]:
    """One page of ``GET /jobs`` and its views; ``status`` ``paused``/``active`` decided
    by the windows open now (read once, for the filter and the views)."""
    store = svc.ready_store()
    now = svc.clock.now()
    windows = store.open_windows(now)
    jobs, total = store.list_jobs(page, limit, status=JobStatus(status) if status else None, handler=handler,
                                  tag=tag, open_windows=windows)
    return jobs, total, [job_view(job, now, paused_until(job, windows, now)) for job in jobs]


def one_job_view(svc: Services, job: Job, now: datetime) -> dict[str, Any]:
    return job_views(svc, [job], now)[0]


def create_window(svc: Services, payload: Any, actor: str | None = None) -> tuple[MaintenanceWindow, datetime]:
    """Open (or plan) a maintenance window from an API body."""
    body = schemas.MaintenanceCreateSchema().load(payload)
    store = svc.ready_store()
    now = svc.clock.now()
    start = body.get("start") or now
    if body["end"] <= now:
        raise marshmallow.ValidationError({"end": ["end must be in the future."]})
    if body["end"] <= start:
        raise marshmallow.ValidationError({"end": ["end must be after start."]})
    window = MaintenanceWindow(maintenance_id=new_maintenance_id(now), start=start, end=body["end"],
                               tags=tuple(body.get("tags") or ()), job_ids=tuple(body.get("job_ids") or ()),
                               reason=body.get("reason"), created_at=now, planned_end=body["end"], created_by=actor)
    return store.create_window(window), now


def job_slots(svc: Services, job_id: str, query: dict[str, Any]) -> list[LedgerSlot]:
    """The slot ledger of a job (`cronhive.ledger`) over ``[from, to]``: by default the
    last 100 slots up to now; 422 for more than 1,000 slots or ``from`` after ``to``."""
    store = svc.ready_store()
    job = store.get_job(job_id)
    now = svc.clock.now()
    spans = ledger.spans_of(job, store.ledger_history(job))
    high = query.get("to") or now
    low = query.get("from") or ledger.default_from(spans, high)
    if low > high:
        raise marshmallow.ValidationError({"from": ["from must not be after to."]})
    return ledger_between(svc, job, spans, low, high, now)[0]


def ledger_between(svc: Services, job: Job, spans: list[ledger.ScheduleSpan], low: datetime, high: datetime,
                   now: datetime) -> tuple[list[LedgerSlot], list[MaintenanceWindow]]:
    """The ledger of ``job`` over ``[low, high]`` at ``now`` (two reads: its runs, the
    windows), and the windows read (those overlapping the range)."""
    store = svc.ready_store()
    runs = store.ledger_runs(job.job_id, low, high, 2 * ledger.MAX_LEDGER_SLOTS + 1)
    windows = store.windows_between(low, max(high, now))
    return ledger.ledger(job.job_id, job.tags, spans, runs, windows, low, high, now), windows


def recent_slots(svc: Services, job: Job, now: datetime, count: int) -> tuple[dict[str, Any], list[LedgerSlot]]:
    """The job's view and its latest ``count`` slots up to ``now`` (the dashboard's job
    page): the windows are read once, for both. An invalid job (its stored document is
    not a job: no schedule to name slots) has none."""
    if job.invalid_reason is not None:
        return job_view(job, now), []
    spans = ledger.spans_of(job, svc.ready_store().ledger_history(job))
    slots, windows = ledger_between(svc, job, spans, ledger.default_from(spans, now, count), now, now)
    return job_view(job, now, paused_until(job, windows, now)), slots
