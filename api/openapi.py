"""The OpenAPI 3 document served at ``/api/v1/cron/openapi.json``, built from the
marshmallow schemas with apispec."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from cronhive.api import schemas
from cronhive.domain import JOB_ID_PATTERN, JOB_STATUS_FILTERS, RUN_STATUSES, TAG_PATTERN, TRIGGERS
from cronhive.windows import WINDOW_STATES

BASE = "/api/v1/cron"

_ERR = {"content": {"application/json": {"schema": "Error"}}}

#: Every status the API answers besides its successes; each in the one error shape.
_STATUS_TEXTS = {
    400: "Malformed JSON body or query parameters (or a malformed Idempotency-Key)",
    401: "Missing or wrong bearer token",
    403: "The token may only read (a read token of API_TOKENS), and this request changes something",
    404: "Unknown job, run or maintenance window",
    405: "The path does not serve this method (the Allow header lists those it does)",
    409: "Conflict (for a request with an Idempotency-Key: the first request with that key is still in progress)",
    412: "If-Match does not name the job's current revision (its ETag): it changed since it was read",
    413: "Body over 64 KiB",
    414: "URL longer than the server accepts",
    415: "Body not sent as application/json",
    422: "A field fails validation (details name each field); idempotency_key_reused: the Idempotency-Key was "
         "used with another request",
    503: "MongoDB or RabbitMQ unreachable; retry after Retry-After seconds",
}
_STATUS_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string", "example": "Bearer"}}},
    405: {"Allow": {"schema": {"type": "string", "example": "GET, POST"}}},
    503: {"Retry-After": {"schema": {"type": "integer", "minimum": 1, "example": 5}}},
}
#: Answered by every operation: another method on the path, a URL that is too long.
_ALWAYS = (405, 414)
#: Answered by every operation that reads a JSON body.
_BODY = (400, 413, 415, 422)


def _errors(*codes: int) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code in sorted({*codes, *_ALWAYS}):
        response: dict[str, Any] = {"description": _STATUS_TEXTS[code], **_ERR}
        if code in _STATUS_HEADERS:
            response["headers"] = _STATUS_HEADERS[code]
        responses[str(code)] = response
    return responses


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: A strong entity tag: the job's revision.
_ETAG = {"ETag": {"description": "The job's revision as a strong entity tag (\"7\"); send it back as If-Match.",
                  "schema": {"type": "string", "example": '"7"'}}}
_REPLAYED = {"Idempotent-Replayed": {
    "description": "true: this is the stored response of an earlier request with the same Idempotency-Key.",
    "schema": {"type": "string", "enum": ["true"]}}}
_IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string", "example": '"7"'},
             "description": "The job's ETag as read: the change applies only while the job is still at that revision "
                            "(412 otherwise); * or absent: unconditional."}
_IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x21-\x7e]+$"},
                    "description": "A key of the client's choosing: the first response is kept 24 h per token, "
                                   "endpoint and key, and a repeat with the same body answers it again "
                                   "(Idempotent-Replayed: true) with no second effect; the same key with another "
                                   "body is 422 idempotency_key_reused, a repeat while the first is in progress 409."}


def _body(schema: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}


#: The seed contract's request examples.
CREATE_EXAMPLE = {"name": "Daily Reminder Check", "schedule": "0 8 * * *", "handler": "reminder_scheduler", "enabled": True}
UPDATE_EXAMPLE = {"schedule": "0 7 * * *", "enabled": True}
MAINTENANCE_EXAMPLE = {"tags": ["billing"], "end": "2099-01-01T03:00:00Z", "reason": "database upgrade"}
BACKFILL_EXAMPLE = {"start": "2026-03-28T00:00:00Z", "end": "2026-03-30T00:00:00Z", "reprocess": "missing"}
PREVIEW_EXAMPLE = {"schedule": "30 2 * * *", "timezone": "Europe/Berlin", "after": "2026-03-28T00:00:00Z", "count": 3}


def _page_params() -> list[dict[str, Any]]:
    return [
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    ]


_JOB_ID = {"name": "job_id", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": JOB_ID_PATTERN, "minLength": 1, "maxLength": 64}}
_MAINTENANCE_ID = {"name": "maintenance_id", "in": "path", "required": True,
                   "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_TRIGGER = {"name": "trigger", "in": "query", "schema": {"type": "string", "enum": list(TRIGGERS)}}


def _run_search_params() -> list[dict[str, Any]]:
    instant = {"type": "string", "format": "date-time"}
    return [
        *_page_params(),
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(RUN_STATUSES)}},
        _TRIGGER,
        {"name": "job_id", "in": "query",
         "schema": {"type": "string", "pattern": JOB_ID_PATTERN, "minLength": 1, "maxLength": 64}},
        {"name": "since", "in": "query", "description": "Runs created at or after this instant.", "schema": instant},
        {"name": "until", "in": "query", "description": "Runs created before this instant (after since).",
         "schema": instant},
    ]


def build_spec(secured: bool, reads_secured: bool = False) -> dict[str, Any]:
    """The document. ``secured`` (API_TOKEN or API_TOKENS set): the bearer scheme,
    required by the mutating operations, which then also answer 401 and 403 (a read
    token). ``reads_secured`` (API_READS=token): the reads need it too (and answer
    401). ``handler`` is a plain string: the names a deployment knows come from
    ``GET /handlers``, never an enum frozen into generated clients."""
    spec = APISpec(
        title="cronhive",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "A distributed cron service: register recurring jobs, watch their runs."},
        servers=[{"url": "/"}],
    )
    for name, schema in {
        "Job": schemas.JobSchema,
        "JobList": schemas.JobListSchema,
        "JobCreate": schemas.JobCreateSchema,
        "JobUpdate": schemas.JobUpdateSchema,
        "Deleted": schemas.DeletedSchema,
        "Trigger": schemas.TriggerSchema,
        "Backfill": schemas.BackfillSchema,
        "BackfillResult": schemas.BackfillResultSchema,
        "Run": schemas.RunSchema,
        "RunSummary": schemas.RunSummarySchema,
        "RunList": schemas.RunListSchema,
        "Revision": schemas.RevisionSchema,
        "RevisionList": schemas.RevisionListSchema,
        "HandlerList": schemas.HandlerListSchema,
        "Preview": schemas.PreviewSchema,
        "PreviewResult": schemas.PreviewResultSchema,
        "Scheduler": schemas.SchedulerSchema,
        "WorkerList": schemas.WorkerListSchema,
        "Maintenance": schemas.MaintenanceSchema,
        "MaintenanceList": schemas.MaintenanceListSchema,
        "MaintenanceCreate": schemas.MaintenanceCreateSchema,
        "SlotList": schemas.SlotListSchema,
        "Error": schemas.ErrorSchema,
    }.items():
        spec.components.schema(name, schema=schema)
    mutating_errors = (401, 403) if secured else ()
    if secured:
        spec.components.security_scheme("bearer", {
            "type": "http", "scheme": "bearer",
            "description": "API_TOKEN (admin) or a named token of API_TOKENS (admin, or read: refused every write "
                           "with 403); the token's name is the actor of the changes it makes."})
    security: dict[str, list[dict[str, list[str]]]] = {"security": [{"bearer": []}]} if secured else {}
    read_security = security if reads_secured else {}
    read_errors = (401,) if reads_secured else ()
    spec.path(
        path=f"{BASE}/jobs",
        operations={
            "get": {
                "summary": "List all registered cron jobs",
                "operationId": "listJobs",
                "parameters": [
                    *_page_params(),
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(JOB_STATUS_FILTERS)}},
                    {"name": "tag", "in": "query", "schema": {"type": "string", "minLength": 1, "maxLength": 64,
                                                              "pattern": TAG_PATTERN}},
                    {"name": "handler", "in": "query", "schema": {
                        "type": "string", "minLength": 1, "maxLength": schemas.MAX_HANDLER_LENGTH,
                        "pattern": schemas.TEXT_PATTERN}},
                ],
                **read_security,
                "responses": {"200": _ok("A page of jobs", "JobList"), **_errors(400, *read_errors, 503)},
            },
            "post": {
                "summary": "Register a new cron job",
                "operationId": "createJob",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": _body("JobCreate", CREATE_EXAMPLE),
                **security,
                "responses": {
                    "201": {**_ok("Created", "Job"),
                            "headers": {"Location": {"schema": {"type": "string"}}, **_ETAG, **_REPLAYED}},
                    **_errors(*_BODY, *mutating_errors, 409, 503),
                },
            },
        },
    )
    spec.path(
        path=f"{BASE}/jobs/{{job_id}}",
        parameters=[_JOB_ID],
        operations={
            "get": {"summary": "Get details for a specific cron job", "operationId": "getJob", **read_security,
                    "responses": {"200": {**_ok("The job", "Job"), "headers": _ETAG},
                                  **_errors(*read_errors, 404, 503)}},
            "put": {"summary": "Update cron schedule or enable/disable a job", "operationId": "updateJob",
                    "parameters": [_IF_MATCH],
                    "requestBody": _body("JobUpdate", UPDATE_EXAMPLE), **security,
                    "responses": {"200": {**_ok("The updated job", "Job"), "headers": _ETAG},
                                  **_errors(*_BODY, *mutating_errors, 404, 409, 412, 503)}},
            "delete": {"summary": "Unregister a cron job", "operationId": "deleteJob", "parameters": [_IF_MATCH],
                       **security,
                       "responses": {"200": _ok("Deleted", "Deleted"),
                                     **_errors(*mutating_errors, 404, 409, 412, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/jobs/{{job_id}}/trigger",
        parameters=[_JOB_ID],
        operations={
            "post": {"summary": "Manually trigger a cron job immediately", "operationId": "triggerJob",
                     "parameters": [_IDEMPOTENCY_KEY], **security,
                     "responses": {"202": {**_ok("Run queued", "Trigger"), "headers": _REPLAYED},
                                   **_errors(400, *mutating_errors, 404, 409, 422, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/jobs/{{job_id}}/backfill",
        parameters=[_JOB_ID],
        operations={
            "post": {"summary": "Run a job's past slots of [start, end) again, oldest first",
                     "operationId": "backfillJob", "requestBody": _body("Backfill", BACKFILL_EXAMPLE),
                     "parameters": [_IDEMPOTENCY_KEY], **security,
                     "responses": {"202": {**_ok("Runs created and queued", "BackfillResult"), "headers": _REPLAYED},
                                   **_errors(*_BODY, *mutating_errors, 404, 409, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/jobs/{{job_id}}/runs",
        parameters=[_JOB_ID],
        operations={
            "get": {"summary": "A job's run history, newest first", "operationId": "listRuns",
                    "parameters": [*_page_params(), _TRIGGER], **read_security,
                    "responses": {"200": _ok("A page of runs", "RunList"), **_errors(400, *read_errors, 404, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/jobs/{{job_id}}/revisions",
        parameters=[_JOB_ID],
        operations={
            "get": {"summary": "Who changed the job, when and how: its revisions, newest first "
                               "(answered for a deleted job too)",
                    "operationId": "listRevisions",
                    "parameters": _page_params(), **read_security,
                    "responses": {"200": _ok("A page of revisions", "RevisionList"),
                                  **_errors(400, *read_errors, 404, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/runs",
        operations={
            "get": {"summary": "Runs across jobs, newest first (filter by status, trigger, job, creation time)",
                    "operationId": "searchRuns", "parameters": _run_search_params(),
                    "responses": {"200": _ok("A page of runs", "RunList"), **_errors(400, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/runs/{{run_id}}",
        parameters=[_RUN_ID],
        operations={
            "get": {"summary": "One run", "operationId": "getRun", **read_security,
                    "responses": {"200": _ok("The run", "Run"), **_errors(*read_errors, 404, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/runs/{{run_id}}/cancel",
        parameters=[_RUN_ID],
        operations={
            "post": {"summary": "Cancel a run: not started → cancelled; running → asked to stop",
                     "operationId": "cancelRun", **security,
                     "responses": {"202": _ok("Cancelled, or asked to stop (cancel_requested)", "Run"),
                                   **_errors(*mutating_errors, 404, 409, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/handlers",
        operations={"get": {"summary": "The handler names workers can run", "operationId": "listHandlers",
                            **read_security,
                            "responses": {"200": _ok("Handlers", "HandlerList"), **_errors(*read_errors)}}},
    )
    spec.path(
        path=f"{BASE}/scheduler",
        operations={"get": {"summary": "The scheduler leader and standbys", "operationId": "getScheduler",
                            **read_security,
                            "responses": {"200": _ok("Leadership", "Scheduler"), **_errors(*read_errors, 503)}}},
    )
    spec.path(
        path=f"{BASE}/workers",
        operations={"get": {"summary": "The worker processes alive (their heartbeat has not expired)",
                            "operationId": "listWorkers", **read_security,
                            "responses": {"200": _ok("Workers", "WorkerList"), **_errors(*read_errors, 503)}}},
    )
    spec.path(
        path=f"{BASE}/schedules/preview",
        operations={"post": {"summary": "The next fire instants of a schedule", "operationId": "previewSchedule",
                             "requestBody": _body("Preview", PREVIEW_EXAMPLE), **read_security,
                             "responses": {"200": _ok("Fire instants", "PreviewResult"),
                                           **_errors(*_BODY, *read_errors, 503)}}},
    )
    spec.path(
        path=f"{BASE}/jobs/{{job_id}}/slots",
        parameters=[_JOB_ID],
        operations={
            "get": {"summary": "The slot ledger: every slot the job's schedule named in a range, and what became "
                               "of it (at most 1,000 slots; default: the last 100 up to now)",
                    "operationId": "listSlots",
                    "parameters": [
                        {"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "to", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    ],
                    "responses": {"200": _ok("The slots, oldest first", "SlotList"), **_errors(400, 404, 422, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/maintenance",
        operations={
            "get": {"summary": "Maintenance windows, latest start first", "operationId": "listMaintenance",
                    "parameters": [*_page_params(), {"name": "status", "in": "query", "schema": {
                        "type": "string", "enum": list(WINDOW_STATES)}}],
                    "responses": {"200": _ok("A page of windows", "MaintenanceList"), **_errors(400, 503)}},
            "post": {"summary": "Pause the jobs of some tags or ids until a given end", "operationId":
                     "createMaintenance", "parameters": [_IDEMPOTENCY_KEY],
                     "requestBody": _body("MaintenanceCreate", MAINTENANCE_EXAMPLE), **security,
                     "responses": {
                         "201": {**_ok("Created", "Maintenance"),
                                 "headers": {"Location": {"schema": {"type": "string"}}, **_REPLAYED}},
                         **_errors(*_BODY, *mutating_errors, 409, 503)}},
        },
    )
    spec.path(
        path=f"{BASE}/maintenance/{{maintenance_id}}",
        parameters=[_MAINTENANCE_ID],
        operations={
            "get": {"summary": "One maintenance window", "operationId": "getMaintenance",
                    "responses": {"200": _ok("The window", "Maintenance"), **_errors(404, 503)}},
            "delete": {"summary": "End a maintenance window now (an upcoming one never opens)",
                       "operationId": "endMaintenance", **security,
                       "responses": {"200": _ok("The window, ended", "Maintenance"),
                                     **_errors(*mutating_errors, 404, 503)}},
        },
    )
    return spec.to_dict()
