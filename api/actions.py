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

from cronhive import cron
from cronhive.api import schemas
from cronhive.dispatch import TriggerResult, trigger_job
from cronhive.domain import Job, format_instant
from cronhive.errors import InvalidSchedule

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
