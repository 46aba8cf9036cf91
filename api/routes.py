"""The REST endpoints (SPEC §3), served under ``/api/v1/cron`` and under the
seed's doubled prefix ``/api/v1/cron/api/v1/cron`` as an alias."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import marshmallow
from flask import Blueprint, Response, current_app, jsonify, request, url_for

from cronhive import heartbeats
from cronhive.api import actions, schemas
from cronhive.api.auth import current_actor, guard_request, mutating, reads_only
from cronhive.api.errors import ApiError
from cronhive.api.idempotency import idempotent
from cronhive.api.openapi import BASE, build_spec
from cronhive.domain import Job, RunFilter, format_instant, run_summary_view, run_view
from cronhive.enums import ReadAccess, RunStatus, Trigger
from cronhive.errors import Unavailable

P = ParamSpec("P")
R = TypeVar("R")

#: Deepest JSON nesting a request body may have (args allow 16 levels inside it).
MAX_JSON_DEPTH = 32
#: Longest integer literal a body may hold (Python refuses to parse longer ones).
MAX_INT_DIGITS = 4300
_SURROGATE = re.compile(r"[\ud800-\udfff]")

bp = Blueprint("cron", __name__, url_prefix=BASE)
alias_bp = Blueprint("cron_alias", __name__, url_prefix=BASE + BASE)
ops_bp = Blueprint("ops", __name__)


def services() -> Any:
    return current_app.extensions["cronhive"]


class _Refused(ValueError):
    """A JSON document the parser's hooks refuse, with a message for the client."""


def _reject_constant(name: str) -> None:
    raise _Refused(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"a number has more than {MAX_INT_DIGITS} digits")
    return int(text)


class JsonRefused(ValueError):
    """Text that is not a JSON document the API accepts; the message is for the client."""


def load_json_text(text: str) -> Any:
    """``text`` as JSON — no ``NaN``/``Infinity``, finite numbers, integers of at most
    `MAX_INT_DIGITS` digits — or `JsonRefused` whose message says what is wrong in the
    client's terms, never a Python exception's text. Shared by the API's bodies and the
    dashboard's ``args`` field."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except _Refused as exc:
        raise JsonRefused(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise JsonRefused(f"nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise JsonRefused("not valid JSON") from None


def parse_json(raw: bytes) -> Any:
    """The JSON document in ``raw``, or `ApiError` 400 ``malformed_json`` whose message
    says what is wrong in the client's terms: never a Python exception's text (a
    5,000-deep document is "nests deeper than 32 levels", not a recursion error)."""
    encoding = json.detect_encoding(raw)  # UTF-8, or UTF-16/32 by their byte pattern (as json.loads does)
    try:
        text = raw.decode(encoding, "surrogatepass")  # a lone surrogate gets its own message below
    except UnicodeDecodeError as exc:
        raise _malformed(f"The body is not valid {encoding.upper().removesuffix('-SIG')} text (byte {exc.start}).") from None
    try:
        return load_json_text(text)
    except JsonRefused as exc:
        raise _malformed(f"The body {'is ' if str(exc).startswith('not') else ''}{exc}.") from None


def _malformed(message: str) -> ApiError:
    return ApiError(400, "malformed_json", message)


def _check_document(document: Any) -> None:
    """Refuse what parses but cannot be handled: nesting deeper than `MAX_JSON_DEPTH`
    (no request needs it; deep documents exhaust recursion further on) and strings
    with unpaired surrogates (``"\\ud800"``: valid JSON syntax, not Unicode text,
    so MongoDB could not store them). Iterative, so any depth is safe to inspect."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, "malformed_json", f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(value, dict):
            stack.extend((key, depth + 1) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and _SURROGATE.search(value):
            raise ApiError(400, "malformed_json", "The body contains an unpaired surrogate (\\ud800-\\udfff escape).")


def json_body() -> Any:
    """The request's JSON document: 415 when not JSON, 413 when too large, 400 when malformed."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    raw = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # a chunked body is cut at the limit, not refused: refuse it here, don't parse half of it
        raise ApiError(413, "payload_too_large", "The request body is larger than 64 KiB.")
    document = parse_json(raw)
    _check_document(document)
    return document


def load_query(schema: marshmallow.Schema) -> dict[str, Any]:
    """The query parameters, validated: unknown (``handler[$ne]``) or repeated ones are a 400."""
    args = request.args
    problems: dict[str, list[str]] = {}
    for name in args:
        if name not in schema.fields:
            problems[name] = ["Unknown query parameter."]
        elif len(args.getlist(name)) > 1:
            problems[name] = ["Give this parameter once."]
    if problems:
        raise ApiError(400, "invalid_query", "Some query parameters are not valid.", problems)
    try:
        loaded: dict[str, Any] = schema.load(args.to_dict(flat=True))
    except marshmallow.ValidationError as exc:
        details = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ApiError(400, "invalid_query", "Some query parameters are not valid.", details) from None
    return loaded


def page_of(items: list[dict[str, Any]], page: int, limit: int, total: int) -> dict[str, Any]:
    return {"data": items, "pagination": {"page": page, "limit": limit, "total": total}}


# -- views --------------------------------------------------------------------


def list_jobs() -> Response:
    query = load_query(schemas.JobListQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    _, total, views = actions.list_jobs(services(), page, limit, status=query.get("status"),
                                        handler=query.get("handler"), tag=query.get("tag"))
    return jsonify(page_of(views, page, limit, total))


def etag_of(job: Job) -> str:
    """A job's strong entity tag: its revision, quoted (``"7"``)."""
    return f'"{job.revision}"'


def with_etag(response: Response, job: Job) -> Response:
    response.headers["ETag"] = etag_of(job)
    return response


def expected_revision(job_id: str) -> int | None:
    """The revision ``If-Match`` requires (None: no header, or ``*``). Entity tags are
    compared strongly: a weak (``W/"7"``) or malformed one never matches, so the write
    is refused (412). Of several tags, the one naming the job's current revision (the
    store's compare-and-set then decides)."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    revisions = [int(tag[1:-1]) for tag in (part.strip() for part in header.split(","))
                 if len(tag) > 2 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit() and len(tag) < 22]
    if len(revisions) > 1:
        current = services().ready_store().get_job(job_id).revision
        return current if current in revisions else revisions[0]
    return revisions[0] if revisions else -1


@mutating
@idempotent
def create_job() -> Response:
    doc, now = actions.create_job(services(), json_body(), actor=current_actor())
    response = with_etag(jsonify(actions.one_job_view(services(), doc, now)), doc)
    response.status_code = 201
    response.headers["Location"] = url_for(f"{request.blueprint}.get_job", job_id=doc.job_id)
    return response


def get_job(job_id: str) -> Response:
    doc = services().ready_store().get_job(job_id)
    return with_etag(jsonify(actions.one_job_view(services(), doc, services().clock.now())), doc)


@mutating
def update_job(job_id: str) -> Response:
    doc, now = actions.update_job(services(), job_id, json_body(), actor=current_actor(),
                                  expected_revision=expected_revision(job_id))
    return with_etag(jsonify(actions.one_job_view(services(), doc, now)), doc)


@mutating
def delete_job(job_id: str) -> Response:
    actions.delete_job(services(), job_id, actor=current_actor(), expected_revision=expected_revision(job_id))
    return jsonify({"deleted": True, "job_id": job_id})


def list_revisions(job_id: str) -> Response:
    """The job's revisions, newest first (a deleted job's too)."""
    query = load_query(schemas.PageQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    revisions, total = services().ready_store().job_revisions(job_id, page, limit)
    return jsonify(page_of([revision.view() for revision in revisions], page, limit, total))


@mutating
@idempotent
def trigger(job_id: str) -> tuple[Response, int]:
    return jsonify(actions.trigger_view(actions.trigger(services(), job_id))), 202


@mutating
@idempotent
def backfill(job_id: str) -> tuple[Response, int]:
    return jsonify(actions.backfill_view(actions.backfill(services(), job_id, json_body()))), 202


def list_runs(job_id: str) -> Response:
    query = load_query(schemas.JobRunsQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    store = services().ready_store()
    job = store.get_job(job_id)
    trigger = query.get("trigger")
    docs, total = store.list_runs(job_id, page, limit, job.incarnation, trigger=Trigger(trigger) if trigger else None)
    return jsonify(page_of([run_summary_view(doc) for doc in docs], page, limit, total))


def list_slots(job_id: str) -> Response:
    query = load_query(schemas.SlotQuerySchema())
    return jsonify({"data": [slot.view() for slot in actions.job_slots(services(), job_id, query)]})


def search_runs() -> Response:
    query = load_query(schemas.RunSearchQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    status, trigger = query.get("status"), query.get("trigger")
    where = RunFilter(status=RunStatus(status) if status else None, trigger=Trigger(trigger) if trigger else None,
                      job_id=query.get("job_id"), since=query.get("since"), until=query.get("until"))
    docs, total = services().ready_store().search_runs(where, page, limit)
    return jsonify(page_of([run_summary_view(doc) for doc in docs], page, limit, total))


def get_run(run_id: str) -> Response:
    return jsonify(run_view(services().ready_store().get_run(run_id)))


@mutating
def cancel_run(run_id: str) -> tuple[Response, int]:
    return jsonify(run_view(actions.cancel_run(services(), run_id))), 202


def list_handlers() -> Response:
    registry = services().handlers
    data = [{"name": name, "description": _first_line(registry.get(name).__doc__)} for name in registry.names()]
    return jsonify({"data": data})


def _first_line(doc: str | None) -> str | None:
    return doc.strip().splitlines()[0] if doc and doc.strip() else None


def scheduler_status() -> Response:
    status = services().ready_store().scheduler_status(services().clock.now())
    return jsonify(status.view())


def list_workers() -> Response:
    svc = services()
    beats = heartbeats.alive(svc.ready_store(), svc.clock.now())
    return jsonify({"data": [beat.view() for beat in beats]})


@reads_only
def preview() -> Response:
    schedule, tz, fires = actions.preview_fires(services(), json_body())
    return jsonify({"schedule": schedule, "timezone": tz, "fires": [format_instant(f) for f in fires]})


def list_maintenance() -> Response:
    query = load_query(schemas.MaintenanceListQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    now = services().clock.now()
    windows, total = services().ready_store().list_windows(page, limit, now, query.get("status"))
    return jsonify(page_of([window.view(now) for window in windows], page, limit, total))


@mutating
@idempotent
def create_maintenance() -> tuple[Response, int, dict[str, str]]:
    window, now = actions.create_window(services(), json_body(), actor=current_actor())
    location = url_for(f"{request.blueprint}.get_maintenance", maintenance_id=window.maintenance_id)
    return jsonify(window.view(now)), 201, {"Location": location}


def get_maintenance(maintenance_id: str) -> Response:
    window = services().ready_store().get_window(maintenance_id)
    return jsonify(window.view(services().clock.now()))


@mutating
def end_maintenance(maintenance_id: str) -> Response:
    now = services().clock.now()
    return jsonify(services().ready_store().end_window(maintenance_id, now, current_actor()).view(now))


def openapi() -> Response:
    settings = services().settings
    return jsonify(build_spec(secured=settings.auth_required, reads_secured=settings.api_reads == ReadAccess.TOKEN))


ROUTES: list[tuple[str, Callable[..., Any], list[str]]] = [
    ("/jobs", list_jobs, ["GET"]),
    ("/jobs", create_job, ["POST"]),
    ("/jobs/<job_id>", get_job, ["GET"]),
    ("/jobs/<job_id>", update_job, ["PUT"]),
    ("/jobs/<job_id>", delete_job, ["DELETE"]),
    ("/jobs/<job_id>/trigger", trigger, ["POST"]),
    ("/jobs/<job_id>/backfill", backfill, ["POST"]),
    ("/jobs/<job_id>/runs", list_runs, ["GET"]),
    ("/jobs/<job_id>/slots", list_slots, ["GET"]),
    ("/jobs/<job_id>/revisions", list_revisions, ["GET"]),
    ("/runs", search_runs, ["GET"]),
    ("/runs/<run_id>", get_run, ["GET"]),
    ("/runs/<run_id>/cancel", cancel_run, ["POST"]),
    ("/handlers", list_handlers, ["GET"]),
    ("/scheduler", scheduler_status, ["GET"]),
    ("/workers", list_workers, ["GET"]),
    ("/schedules/preview", preview, ["POST"]),
    ("/maintenance", list_maintenance, ["GET"]),
    ("/maintenance", create_maintenance, ["POST"]),
    ("/maintenance/<maintenance_id>", get_maintenance, ["GET"]),
    ("/maintenance/<maintenance_id>", end_maintenance, ["DELETE"]),
    ("/openapi.json", openapi, ["GET"]),
]

for _blueprint in (bp, alias_bp):
    _blueprint.before_request(guard_request)
    for _rule, _view, _methods in ROUTES:
        _blueprint.add_url_rule(_rule, view_func=_view, methods=_methods)


@ops_bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@ops_bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, str] = {}
    for name, ping in (("mongodb", svc.store.ping), ("rabbitmq", svc.publisher.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Unavailable as exc:
            checks[name] = exc.message
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503
