"""The dashboard's pages, fragments and actions (blueprint ``ui`` at ``/ui``).

Pages are server-rendered (Jinja, autoescaped); ``static/app.js`` adds the live
parts: it re-fetches the fragments (``/ui/live``, ``/ui/jobs/<id>/live``) every
few seconds and swaps them in, fetches ``/ui/preview`` while a schedule is
typed, and draws the charts. Every read goes through the store, the domain
views (`job_view`, `run_view`) and `cronhive.stats`; every action through
`cronhive.api.actions`, the functions the REST endpoints call.

MongoDB commands per view (whatever the number of jobs and runs; measured by
``tests/api/test_ui_pages.py``): overview at most 20 (its live fragment at most
15; the jobs table is keyset pages read in windows of creation time,
`cronhive.store.browse`: ~5 reads, at most 24 for the worst spacing of creation
instants), job page at most 7 (the slot strip: its revisions, its runs in range and those covering it, the windows), run page 2, job form 0-1 (1 on edit).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import marshmallow
from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from cronhive import heartbeats, stats
from cronhive.api import actions, schemas
from cronhive.api.auth import Principal
from cronhive.api.ui import forms, present
from cronhive.api.ui.security import (
    SessionKeys,
    UiSession,
    add_security_headers,
    csrf_ok,
    load_session,
    save_session,
    session_principal,
    sign_in,
)
from cronhive.domain import JOB_FLAG_STATUSES, job_view, run_view
from cronhive.enums import JobStatus, ReadAccess
from cronhive.errors import (
    Conflict,
    CronhiveError,
    DuplicateJob,
    JobInvalid,
    LeaseHeld,
    NotFound,
    Unavailable,
    ValidationError,
)
from cronhive.store import JobPosition, MongoStore

if TYPE_CHECKING:
    from cronhive.api.app import Services

F = TypeVar("F", bound=Callable[..., Any])

ui_bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static",
                  static_url_path="/static")

JOBS_PER_PAGE = 20
RUNS_PER_PAGE = 20
CHART_RUNS = 50
#: Slots of the ledger the job page's strip shows (manual runs join them).
STRIP_SLOTS = 40
UPCOMING_LIMIT = 12
UPCOMING_HORIZON = timedelta(hours=1)
LIVE_RUNS = 10
FIRES_SHOWN = 10
#: Milliseconds between two refreshes of a live fragment.
LIVE_INTERVAL_MS = 3000


class UiState:
    """What the dashboard keeps per app: the session keys, and whether its indexes exist."""

    def __init__(self, keys: SessionKeys) -> None:
        self.keys = keys
        self.indexes_ready = False


def svc() -> Services:
    return current_app.extensions["cronhive"]  # type: ignore[no-any-return]


def state() -> UiState:
    return current_app.extensions["cronhive_ui"]  # type: ignore[no-any-return]


def session() -> UiSession:
    current: UiSession | None = getattr(g, "ui_session", None)
    if current is None:
        current = load_session(state().keys)
        g.ui_session = current
    return current


def store() -> MongoStore:
    """The store, with the API's and the dashboard's indexes ensured once. The dashboard's
    aggregate reads (`cronhive.stats`) need the MongoDB store itself, not only the
    API's protocol."""
    ready = svc().ready_store()
    if not isinstance(ready, MongoStore):
        raise TypeError(f"the dashboard needs a MongoStore, got {type(ready).__name__}")
    ui = state()
    if not ui.indexes_ready:
        stats.ensure_indexes(ready)
        ui.indexes_ready = True
    return ready


def auth_required() -> bool:
    return svc().settings.auth_required


def principal() -> Principal | None:
    """Who this dashboard session acts as (None: not signed in while a token is configured)."""
    return session_principal(svc().settings, session())


def actor() -> str | None:
    """The actor of a change made from this session (its token's name)."""
    who = principal()
    return who.name if who is not None else None


#: Pages that open without a sign-in under API_READS=token.
OPEN_PAGES = frozenset({"ui.signin_form", "ui.signin", "ui.signout", "ui.static"})


@ui_bp.before_request
def reads_need_a_session() -> BaseResponse | None:
    """Under ``API_READS=token`` every page but the sign-in needs a signed-in session."""
    if svc().settings.api_reads != ReadAccess.TOKEN or request.endpoint in OPEN_PAGES:
        return None
    try:
        if principal() is not None:
            return None
    except Unavailable:
        pass
    target = request.full_path if request.method == "GET" else None
    return redirect(url_for("ui.signin_form", next=target), code=303)


# -- request plumbing -------------------------------------------------------------


@ui_bp.after_request
def finish(response: Response) -> Response:
    current: UiSession | None = getattr(g, "ui_session", None)
    if current is not None:
        save_session(state().keys, current, response)
    if request.endpoint == "ui.static":
        response.headers["Cache-Control"] = "public, max-age=3600"
    else:
        response.headers.setdefault("Cache-Control", "no-store")
    return add_security_headers(response)


@ui_bp.app_template_global()
def csrf_token() -> str:
    return session().csrf_token()


@ui_bp.app_template_global()
def take_flashes() -> list[tuple[str, str]]:
    try:
        return session().take_flashes()
    except Unavailable:
        return []


@ui_bp.app_context_processor
def template_context() -> dict[str, Any]:
    if request.blueprint != "ui":
        return {}
    try:
        who = principal()
    except Unavailable:  # the session key could not be read: show the page, offer no action
        who = None
    return {
        "auth_required": auth_required(),
        "is_signed_in": auth_required() and who is not None,
        "signed_in_as": who.name if who is not None else None,
        "can_act": who is not None and who.can_write,
        "p": present,
        "live_interval_ms": LIVE_INTERVAL_MS,
    }


def page_arg(name: str = "page") -> int:
    try:
        return max(1, min(1_000_000, int(request.args.get(name, "1"))))
    except ValueError:
        return 1


def safe_next(target: str | None, default: str) -> str:
    """A path inside the dashboard to go back to (never another site)."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def referring_page() -> str | None:
    """The dashboard page a form was sent from (same host only), to come back to."""
    if not request.referrer:
        return None
    parts = urlsplit(request.referrer)
    return parts.path + (f"?{parts.query}" if parts.query else "") if parts.netloc == request.host else None


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, title=title, message=message, now=svc().clock.now()), status


@ui_bp.errorhandler(CronhiveError)
def domain_error(exc: CronhiveError) -> tuple[str, int]:
    if isinstance(exc, NotFound):
        what = "run" if exc.code == "run_not_found" else "job"
        return error_page(404, f"No such {what}", exc.message)
    if isinstance(exc, Conflict):
        return error_page(409, "Not done", exc.message)
    if isinstance(exc, ValidationError):
        return error_page(422, "Not valid", exc.message)
    if isinstance(exc, Unavailable):
        current_app.logger.warning("dashboard: dependency unavailable: %s", exc.message)
        return error_page(503, "Service unavailable", f"{exc.message}. This page retries when you reload it.")
    current_app.logger.error("dashboard: unhandled domain error", exc_info=exc)
    return error_page(500, "Internal error", "Something went wrong; the error is in the API's log.")


@ui_bp.errorhandler(Exception)
def unexpected(exc: Exception) -> tuple[str, int]:
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return error_page(exc.code or 500, exc.name, exc.description or "")
    current_app.logger.error("dashboard: unhandled error", exc_info=exc)
    return error_page(500, "Internal error", "Something went wrong; the error is in the API's log.")


@ui_bp.route("/<path:anything>")
def unknown(anything: str) -> tuple[str, int]:
    return error_page(404, "Page not found", f"There is no dashboard page at /ui/{anything}.")


def action(view: F) -> F:
    """A POST the dashboard accepts only with the session's CSRF token and, with a
    token configured, a session signed in with an admin token."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not csrf_ok(session()):
            return error_page(403, "Form expired",
                              "This form was not sent from this dashboard's page, or it has expired. "
                              "Go back, reload the page and try again.")
        who = principal()
        if who is None:
            back = safe_next(request.form.get("next") or referring_page(), url_for("ui.overview"))
            return render_template("signin.html", next=back, now=svc().clock.now(),
                                   refused="Sign in with the API token to do this."), 401
        if not who.can_write:
            return error_page(403, "Read-only token",
                              f"You are signed in with {who.name!r}, a token that may only read. "
                              "Sign in with an admin token to trigger, pause, edit or delete.")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def redirect_to(endpoint: str, **values: Any) -> BaseResponse:
    return redirect(url_for(endpoint, **values), code=303)


# -- overview ------------------------------------------------------------------------


def overview_live_context(now: datetime) -> dict[str, Any]:
    """The parts of the overview that refresh by themselves."""
    ready = store()
    activity = stats.run_activity(ready, now)
    return {
        "leader": ready.scheduler_status(now),
        "workers": [beat.view() for beat in heartbeats.alive(ready, now)],
        "counts": stats.job_counts(ready),
        "activity": activity,
        "chart": activity_chart(activity),
        "running": [run_view(doc) for doc in ready.running_runs(LIVE_RUNS)],
        "recent": [run_view(doc) for doc in stats.recently_finished(ready, now, LIVE_RUNS)],
        "upcoming": stats.upcoming_fires(ready, now, UPCOMING_HORIZON, UPCOMING_LIMIT),
        "now": now,
    }


def activity_chart(activity: stats.RunActivity) -> dict[str, Any]:
    """Chart.js data: runs per hour (UTC), stacked by outcome."""
    series = [("succeeded", "Succeeded"), ("failed", "Failed"), ("timed_out", "Timed out"),
              ("abandoned", "Abandoned"), ("skipped", "Skipped"), ("cancelled", "Cancelled")]
    return {
        "labels": [bucket.start.strftime("%H:00") for bucket in activity.hours],
        "series": [{"key": key, "label": label, "data": [bucket.counts.get(key, 0) for bucket in activity.hours]}
                   for key, label in series],
    }


@ui_bp.get("/")
def overview() -> str:
    now = svc().clock.now()
    status = request.args.get("status") or None
    status = status if status in JOB_FLAG_STATUSES else None
    handler = (request.args.get("handler") or "").strip()[:200] or None
    text = (request.args.get("q") or "").strip()[:200]
    page = store().browse_jobs(JOBS_PER_PAGE, now, after=JobPosition.parse(request.args.get("after")),
                               before=JobPosition.parse(request.args.get("before")),
                               status=JobStatus(status) if status else None, handler=handler, text=text)
    jobs = actions.job_views(svc(), page.jobs, now)
    filters = {"q": text, "status": status or "", "handler": handler or ""}
    live = overview_live_context(now)
    filtered = bool(status or handler or text)
    return render_template("overview.html", jobs=jobs, jobs_page=page, filters=filters,
                           jobs_total=None if filtered else live["counts"].total,
                           handlers=svc().handlers.names(), **live)


@ui_bp.get("/live")
def overview_live() -> str:
    return render_template("_overview_live.html", **overview_live_context(svc().clock.now()))


# -- job page -------------------------------------------------------------------------


def job_live_context(job_id: str, page: int, now: datetime) -> dict[str, Any]:
    ready = store()
    stored = ready.get_job(job_id)
    job, slots = actions.recent_slots(svc(), stored, now, STRIP_SLOTS)
    recent_docs, total = ready.list_runs(job_id, 1, CHART_RUNS, stored.incarnation)
    if page == 1:
        table_docs = recent_docs[:RUNS_PER_PAGE]
    else:
        table_docs, total = ready.list_runs(job_id, page, RUNS_PER_PAGE, stored.incarnation)
    recent = [run_view(doc) for doc in reversed(recent_docs)]  # oldest first
    return {
        "job": job,
        "runs": [run_view(doc) for doc in table_docs],
        "runs_total": total,
        "runs_page": page,
        "runs_pages": max(1, -(-total // RUNS_PER_PAGE)),
        "strip": present.slot_strip([slot.view() for slot in slots], recent)[-CHART_RUNS:],
        # a failed run waiting out its backoff holds the lease, but nothing runs
        "retry": next((run for run in reversed(recent) if run["retry_at"]), None),
        "chart": {
            "labels": [present.utc_text(run["created_at"])[11:19] for run in recent],
            "duration": [run["duration_ms"] for run in recent],
            "lateness": [run["lateness_ms"] for run in recent],
            "status": [run["status"] for run in recent],
        },
        "now": now,
    }


@ui_bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    now = svc().clock.now()
    context = job_live_context(job_id, page_arg(), now)
    job = context["job"]
    if job["invalid_reason"] is not None:  # nothing to preview: it never fires until repaired
        return render_template("job.html", fires=[], **context)
    _, tz, fires = actions.preview_fires(svc(), {"schedule": job["schedule"], "timezone": job["timezone"],
                                                        "count": FIRES_SHOWN})
    return render_template("job.html", fires=present.fire_rows(fires, tz, now), **context)


@ui_bp.get("/jobs/<job_id>/live")
def job_live(job_id: str) -> str:
    return render_template("_job_live.html", **job_live_context(job_id, page_arg(), svc().clock.now()))


@ui_bp.post("/jobs/<job_id>/trigger")
@action
def trigger(job_id: str) -> BaseResponse:
    try:
        result = actions.trigger(svc(), job_id)
    except (LeaseHeld, JobInvalid) as exc:
        session().flash("error", f"Not triggered: {exc.message}.")
    else:
        session().flash("ok", f"Run {result.run_id} queued.")
    return redirect_to("ui.job_page", job_id=job_id)


@ui_bp.post("/jobs/<job_id>/pause")
@action
def pause(job_id: str) -> BaseResponse:
    try:
        actions.update_job(svc(), job_id, {"enabled": False}, actor=actor())
    except ValidationError as exc:  # an invalid job: only an edit of its bad fields repairs it
        session().flash("error", f"Not paused: {exc.message}.")
    else:
        session().flash("ok", "Job paused: no slot fires until it is resumed.")
    return redirect_to("ui.job_page", job_id=job_id)


@ui_bp.post("/jobs/<job_id>/resume")
@action
def resume(job_id: str) -> BaseResponse:
    try:
        doc, now = actions.update_job(svc(), job_id, {"enabled": True}, actor=actor())
    except ValidationError as exc:
        session().flash("error", f"Not resumed: {exc.message}.")
        return redirect_to("ui.job_page", job_id=job_id)
    nxt = job_view(doc, now)["next_trigger_at"]
    session().flash("ok", f"Job resumed; next fire {present.utc_text(nxt)}.")
    return redirect_to("ui.job_page", job_id=job_id)


@ui_bp.get("/jobs/<job_id>/delete")
def delete_confirm(job_id: str) -> str:
    now = svc().clock.now()
    return render_template("delete.html", job=job_view(store().get_job(job_id), now), now=now)


@ui_bp.post("/jobs/<job_id>/delete")
@action
def delete(job_id: str) -> BaseResponse:
    actions.delete_job(svc(), job_id, actor=actor())
    session().flash("ok", f"Job {job_id} deleted, with its run history.")
    return redirect_to("ui.overview")


# -- create / edit --------------------------------------------------------------------


def render_form(form: forms.JobForm, job: dict[str, Any] | None, status: int = 200) -> tuple[str, int]:
    return render_template("job_form.html", form=form, job=job, handlers=svc().handlers.names(),
                           choices=forms.CHOICES, now=svc().clock.now()), status


@ui_bp.get("/jobs/new")
def new_job() -> tuple[str, int]:
    return render_form(forms.blank_form(svc().handlers.names()), None)


@ui_bp.post("/jobs/new")
@action
def create_job() -> BaseResponse | tuple[str, int]:
    payload, problems = forms.payload_from_form(request.form, creating=True)
    errors = {**forms.flatten_errors(
        schemas.JobCreateSchema.with_handlers(frozenset(svc().handlers.names()), svc().guard).validate(payload)), **problems}
    if not errors:
        try:
            doc, _ = actions.create_job(svc(), payload, actor=actor())
        except marshmallow.ValidationError as exc:
            errors = forms.flatten_errors(exc.messages)
        except DuplicateJob as exc:
            errors = {"job_id": [exc.message]}
        else:
            session().flash("ok", f"Job {doc.job_id} created.")
            return redirect_to("ui.job_page", job_id=doc.job_id)
    return render_form(forms.form_from_post(request.form, True, errors), None, 422)


@ui_bp.get("/jobs/<job_id>/edit")
def edit_job(job_id: str) -> tuple[str, int]:
    job = job_view(store().get_job(job_id), svc().clock.now())
    return render_form(forms.form_of_job(job), job)


@ui_bp.post("/jobs/<job_id>/edit")
@action
def update_job(job_id: str) -> BaseResponse | tuple[str, int]:
    job = job_view(store().get_job(job_id), svc().clock.now())
    payload, problems = forms.payload_from_form(request.form, creating=False)
    errors = {**forms.flatten_errors(
        schemas.JobUpdateSchema.with_handlers(frozenset(svc().handlers.names()), svc().guard).validate(payload)), **problems}
    if not errors:
        try:
            actions.update_job(svc(), job_id, payload, actor=actor())
        except marshmallow.ValidationError as exc:
            errors = forms.flatten_errors(exc.messages)
        else:
            session().flash("ok", "Job saved.")
            return redirect_to("ui.job_page", job_id=job_id)
    form = forms.form_from_post(request.form, False, errors)
    form.values["job_id"] = job_id
    return render_form(form, job, 422)


@ui_bp.get("/preview")
def preview() -> tuple[str, int]:
    """The next fires of the schedule being typed (the rules of ``POST /schedules/preview``)."""
    payload: dict[str, Any] = {"schedule": request.args.get("schedule", ""), "count": FIRES_SHOWN}
    for name in ("timezone", "after"):
        if request.args.get(name, "").strip():
            payload[name] = request.args[name].strip()
    now = svc().clock.now()
    try:
        schedule, tz, fires = actions.preview_fires(svc(), payload)
    except marshmallow.ValidationError as exc:
        return render_template("_preview.html", errors=forms.flatten_errors(exc.messages), fires=[], now=now), 200
    after = schemas.PreviewSchema().load(payload).get("after") or now
    return render_template("_preview.html", errors={}, fires=present.fire_rows(fires, tz, after), tz=tz,
                           description=present.describe(schedule), now=now), 200


# -- run page ---------------------------------------------------------------------------


@ui_bp.get("/runs/<run_id>")
def run_page(run_id: str) -> str:
    ready = store()
    run = run_view(ready.get_run(run_id))
    now = svc().clock.now()
    try:
        job: dict[str, Any] | None = job_view(ready.get_job(run["job_id"]), now)
    except NotFound:
        job = None
    error = run.get("error") or {}
    traceback = error.get("traceback") if isinstance(error, dict) else None
    output = run.get("output")
    output_text = None if output is None else json.dumps(output, indent=2, ensure_ascii=False)
    return render_template("run.html", run=run, job=job, traceback_excerpt=excerpt(traceback), now=now,
                           output_text=output_text)


def excerpt(text: object, lines: int = 40) -> str | None:
    """The last ``lines`` lines of a traceback (where the error is)."""
    if not isinstance(text, str) or not text.strip():
        return None
    kept = text.rstrip().splitlines()
    return "\n".join((["…"] if len(kept) > lines else []) + kept[-lines:])


# -- sign-in ------------------------------------------------------------------------------


@ui_bp.get("/signin")
def signin_form() -> str:
    return render_template("signin.html", next=safe_next(request.args.get("next"), url_for("ui.overview")),
                           now=svc().clock.now())


@ui_bp.post("/signin")
def signin() -> BaseResponse | tuple[str, int]:
    back = safe_next(request.form.get("next"), url_for("ui.overview"))
    now = svc().clock.now()
    if not csrf_ok(session()):
        return error_page(403, "Form expired", "Reload the sign-in page and try again.")
    if not auth_required():
        return redirect(back, code=303)
    current = session()
    who = sign_in(svc().settings, current, request.form.get("token", ""))
    if who is None:
        return render_template("signin.html", next=back, now=now,
                               refused="That is not the API token (nor one of API_TOKENS)."), 401
    current.csrf_token()  # a new CSRF token for the signed-in session
    current.flash("ok", f"Signed in as {who.name}" + ("." if who.can_write else " (read-only)."))
    return redirect(back, code=303)


@ui_bp.post("/signout")
def signout() -> BaseResponse | tuple[str, int]:
    if not csrf_ok(session()):
        return error_page(403, "Form expired", "Reload the page and try again.")
    current = session()
    current.clear()
    current.modified = True
    current.flash("ok", "Signed out.")
    return redirect_to("ui.overview")


@ui_bp.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)
