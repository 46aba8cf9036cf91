"""The REST endpoints (SPEC §3), served under ``/api/v1/cron`` and under the
seed's doubled prefix ``/api/v1/cron/api/v1/cron`` as an alias."""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import marshmallow
from flask import Blueprint, Response, current_app, jsonify, request, url_for

from cronhive import heartbeats
from cronhive.api import actions, schemas
from cronhive.api.errors import ApiError
from cronhive.api.openapi import BASE, build_spec
from cronhive.domain import RunFilter, format_instant, job_view, run_view
from cronhive.enums import RunStatus, Trigger
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


def mutating(view: Callable[P, R]) -> Callable[P, R]:
    """Require ``Authorization: Bearer <API_TOKEN>`` when a token is configured."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        token = services().settings.api_token
        if token:
            given = request.headers.get("Authorization", "")
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
                raise ApiError(401, "unauthorized", "A valid bearer token is required.", headers={"WWW-Authenticate": "Bearer"})
        return view(*args, **kwargs)

    return wrapper


def page_of(items: list[dict[str, Any]], page: int, limit: int, total: int) -> dict[str, Any]:
    return {"data": items, "pagination": {"page": page, "limit": limit, "total": total}}


# -- views --------------------------------------------------------------------


def list_jobs() -> Response:
    query = load_query(schemas.JobListQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    docs, total = services().ready_store().list_jobs(page, limit, status=query.get("status"), handler=query.get("handler"))
    now = services().clock.now()
    return jsonify(page_of([job_view(doc, now) for doc in docs], page, limit, total))


@mutating
def create_job() -> tuple[Response, int, dict[str, str]]:
    doc, now = actions.create_job(services(), json_body())
    location = url_for(f"{request.blueprint}.get_job", job_id=doc.job_id)
    return jsonify(job_view(doc, now)), 201, {"Location": location}


def get_job(job_id: str) -> Response:
    doc = services().ready_store().get_job(job_id)
    return jsonify(job_view(doc, services().clock.now()))


@mutating
def update_job(job_id: str) -> Response:
    doc, now = actions.update_job(services(), job_id, json_body())
    return jsonify(job_view(doc, now))


@mutating
def delete_job(job_id: str) -> Response:
    actions.delete_job(services(), job_id)
    return jsonify({"deleted": True, "job_id": job_id})


@mutating
def trigger(job_id: str) -> tuple[Response, int]:
    return jsonify(actions.trigger_view(actions.trigger(services(), job_id))), 202


@mutating
def backfill(job_id: str) -> tuple[Response, int]:
    return jsonify(actions.backfill_view(actions.backfill(services(), job_id, json_body()))), 202


def list_runs(job_id: str) -> Response:
    query = load_query(schemas.JobRunsQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    store = services().ready_store()
    store.get_job(job_id)
    trigger = query.get("trigger")
    docs, total = store.list_runs(job_id, page, limit, trigger=Trigger(trigger) if trigger else None)
    return jsonify(page_of([run_view(doc) for doc in docs], page, limit, total))


def search_runs() -> Response:
    query = load_query(schemas.RunSearchQuerySchema())
    page, limit = query.get("page", 1), query.get("limit", 20)
    status, trigger = query.get("status"), query.get("trigger")
    where = RunFilter(status=RunStatus(status) if status else None, trigger=Trigger(trigger) if trigger else None,
                      job_id=query.get("job_id"), since=query.get("since"), until=query.get("until"))
    docs, total = services().ready_store().search_runs(where, page, limit)
    return jsonify(page_of([run_view(doc) for doc in docs], page, limit, total))


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


def preview() -> Response:
    schedule, tz, fires = actions.preview_fires(services(), json_body())
    return jsonify({"schedule": schedule, "timezone": tz, "fires": [format_instant(f) for f in fires]})


def openapi() -> Response:
    svc = services()
    return jsonify(build_spec(secured=bool(svc.settings.api_token)))


ROUTES: list[tuple[str, Callable[..., Any], list[str]]] = [
    ("/jobs", list_jobs, ["GET"]),
    ("/jobs", create_job, ["POST"]),
    ("/jobs/<job_id>", get_job, ["GET"]),
    ("/jobs/<job_id>", update_job, ["PUT"]),
    ("/jobs/<job_id>", delete_job, ["DELETE"]),
    ("/jobs/<job_id>/trigger", trigger, ["POST"]),
    ("/jobs/<job_id>/backfill", backfill, ["POST"]),
    ("/jobs/<job_id>/runs", list_runs, ["GET"]),
    ("/runs", search_runs, ["GET"]),
    ("/runs/<run_id>", get_run, ["GET"]),
    ("/runs/<run_id>/cancel", cancel_run, ["POST"]),
    ("/handlers", list_handlers, ["GET"]),
    ("/scheduler", scheduler_status, ["GET"]),
    ("/workers", list_workers, ["GET"]),
    ("/schedules/preview", preview, ["POST"]),
    ("/openapi.json", openapi, ["GET"]),
]

for _blueprint in (bp, alias_bp):
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
