"""Marshmallow schemas: what clients may send (unknown fields rejected) and what
the API answers. The OpenAPI document (`cronhive.api.openapi`) is built from
them, so every limit enforced here (lengths, patterns, ranges) is also declared
there; what JSON Schema cannot say (args' byte size and depth) is in the field's
description and ``x-`` extensions."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from cronhive import cron
from cronhive.domain import (
    JOB_ID_PATTERN,
    JOB_ID_RE,
    JOB_STATUSES,
    MAX_BACKFILL_SLOTS,
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    REPROCESS_CHOICES,
    RUN_STATUSES,
    TRIGGERS,
)
from cronhive.errors import InvalidSchedule

MAX_ARGS_BYTES = 16 * 1024
MAX_ARGS_DEPTH = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_NAME_LENGTH = 200
MAX_HANDLER_LENGTH = 200
MAX_TIMEZONE_LENGTH = 64
MAX_JITTER_S = 3600
WEEK_S = 7 * 86400
MAX_MAX_FIRES = 1_000_000_000

#: Characters no text field may hold: C0 and C1 control characters (NUL, tab,
#: newline, escape, DEL ...), the Unicode line/paragraph separators, and the
#: bidirectional embedding/override/isolate controls (they make a name display
#: as something other than what it is).
FORBIDDEN_CHARACTERS = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
#: Plain text: at least one non-whitespace character and none of the forbidden ones.
TEXT_PATTERN = rf"^(?!\s*$)[^{FORBIDDEN_CHARACTERS}]+$"
TEXT_RE = re.compile(TEXT_PATTERN)
_FORBIDDEN_RE = re.compile(f"[{FORBIDDEN_CHARACTERS}]")
#: What `cronhive.cron` accepts as schedule characters: printable ASCII and tab.
SCHEDULE_PATTERN = r"^[\t\x20-\x7e]+$"
#: What `cronhive.cron.load_timezone` accepts as the shape of an IANA name.
TIMEZONE_PATTERN = r"^[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*$"
ARGS_DESCRIPTION = (
    f"Handler arguments: a JSON object of at most {MAX_ARGS_BYTES} bytes (compact UTF-8 JSON), nesting at most "
    f"{MAX_ARGS_DEPTH} levels; keys non-empty, not starting with '$', without '.' or control characters; "
    "integers within 64 bits."
)


class JobId(fields.String):
    """``^[a-z0-9][a-z0-9_-]{0,63}$`` matched in full (``$`` alone would let a
    trailing newline through)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if JOB_ID_RE.fullmatch(text) is None:
            raise ValidationError(f"job_id must match {JOB_ID_PATTERN}.")
        return text


class Text(fields.String):
    """Plain text (`TEXT_PATTERN`): not empty or only whitespace, no control
    characters (NUL included), line separators or bidirectional controls."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if (bad := _FORBIDDEN_RE.search(text)) is not None:
            raise ValidationError(f"Must not contain control characters (found U+{ord(bad.group()):04X}).")
        if TEXT_RE.fullmatch(text) is None:
            raise ValidationError("Must not be empty or only whitespace.")
        return text


def name_field(**kwargs: Any) -> Text:
    return Text(validate=validate.Length(min=1, max=MAX_NAME_LENGTH),
                metadata={"pattern": TEXT_PATTERN, "example": "Daily Reminder Check"}, **kwargs)


def handler_field(**kwargs: Any) -> Text:
    description = ("The handler workers run: a plain string. The names this deployment knows are listed by "
                   "GET /api/v1/cron/handlers (deployments add their own, so this is not an enum); an unknown "
                   "name is a 422.")
    return Text(validate=validate.Length(min=1, max=MAX_HANDLER_LENGTH),
                metadata={"pattern": TEXT_PATTERN, "example": "reminder_scheduler", "description": description},
                **kwargs)


class StrictBoolean(fields.Boolean):
    """Only JSON ``true``/``false`` (``"yes"``, ``1`` and ``"true"`` are rejected)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean: use true or false.")
        return value


class StrictInteger(fields.Integer):
    """A JSON integer (no strings, floats or booleans)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return value


class ScheduleString(fields.String):
    """A cron expression (`cronhive.cron`), stored in its normalized form."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return cron.parse_schedule(text).expression
        except InvalidSchedule as exc:
            raise ValidationError(exc.message) from None


def schedule_field(example: str, **kwargs: Any) -> ScheduleString:
    return ScheduleString(validate=validate.Length(min=1, max=cron.MAX_EXPRESSION_LENGTH),
                          metadata={"pattern": SCHEDULE_PATTERN, "example": example,
                                    "description": "Cron: 5 fields (min hour dom month dow), 6 with seconds "
                                                   "first, or a macro (@daily, @hourly ...)."},
                          **kwargs)


class TimezoneString(fields.String):
    """An IANA time zone name that this machine's tz database knows."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            cron.load_timezone(text)
        except InvalidSchedule as exc:
            raise ValidationError(exc.message) from None
        return text


def timezone_field() -> TimezoneString:
    return TimezoneString(validate=validate.Length(min=1, max=MAX_TIMEZONE_LENGTH),
                          metadata={"pattern": TIMEZONE_PATTERN, "example": "Europe/Berlin",
                                    "description": "IANA time zone the schedule's wall times are read in. "
                                                   "Default: UTC."})


class Instant(fields.DateTime):
    """An ISO-8601 instant with an offset or ``Z`` (naive times are ambiguous:
    rejected), between 1970 and 9000, returned in UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise ValidationError("Not a valid string.")
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValidationError("Not a valid ISO-8601 instant (e.g. 2026-03-26T08:00:00Z).") from None
        if parsed.tzinfo is None:
            raise ValidationError("The instant needs a UTC offset or Z.")
        try:
            instant = parsed.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00
            raise ValidationError("The instant must be between 1970 and 9000.") from None
        if not 1970 <= instant.year <= 9000:
            raise ValidationError("The instant must be between 1970 and 9000.")
        return instant


def _check_args(value: Any, depth: int = 0) -> None:
    if depth > MAX_ARGS_DEPTH:
        raise ValidationError(f"args nests deeper than {MAX_ARGS_DEPTH} levels.")
    if isinstance(value, dict):
        for key, item in value.items():
            if (not isinstance(key, str) or not key or key.startswith("$") or "." in key
                    or _FORBIDDEN_RE.search(key)):
                raise ValidationError("args keys must be non-empty and may not start with '$' "
                                      "or hold '.' or control characters.")
            _check_args(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_args(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise ValidationError("args numbers must fit in 64 bits.")


class ArgsField(fields.Dict):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError("Not a valid JSON object.")
        _check_args(value)
        if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")) > MAX_ARGS_BYTES:
            raise ValidationError(f"args is larger than {MAX_ARGS_BYTES} bytes.")
        return value


def args_field() -> ArgsField:
    return ArgsField(metadata={"description": ARGS_DESCRIPTION, "x-max-bytes": MAX_ARGS_BYTES,
                               "x-max-depth": MAX_ARGS_DEPTH, "example": {"list": "daily"}})


def check_jitter(schedule: str, jitter_s: int) -> None:
    """A job's jitter must stay below its schedule's shortest interval between fires
    (`cron.shortest_interval`): a larger one could push a fire past the next slot.

    Raises:
        marshmallow.ValidationError: naming ``jitter_s`` (the API answers 422).
    """
    if jitter_s <= 0:
        return
    interval_s = int(cron.shortest_interval(schedule).total_seconds())
    if jitter_s >= interval_s:
        raise ValidationError({"jitter_s": [
            f"jitter_s ({jitter_s} s) must be below the schedule's shortest interval between fires "
            f"({interval_s} s)."]})


def check_bounds(start_at: datetime | None, end_at: datetime | None) -> None:
    """``end_at`` must be after ``start_at`` (422 naming ``end_at``)."""
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise ValidationError({"end_at": ["end_at must be after start_at."]})


def _bound_fields() -> dict[str, fields.Field[Any]]:
    return {
        "start_at": Instant(allow_none=True, metadata={
            "example": "2026-04-01T00:00:00Z",
            "description": "No scheduled slot before this instant (ISO-8601 with Z or an offset). null: none."}),
        "end_at": Instant(allow_none=True, metadata={
            "example": "2026-05-01T00:00:00Z",
            "description": "No scheduled slot at or after this instant; must be after start_at. null: none."}),
        "max_fires": StrictInteger(allow_none=True, validate=validate.Range(min=1, max=MAX_MAX_FIRES), metadata={
            "example": 10,
            "description": "At most this many scheduled runs fire (skipped slots do not count; counted from when "
                           "it is set). null: unbounded. Once the schedule is exhausted the job is completed."}),
    }


def _policy_fields() -> dict[str, fields.Field[Any]]:
    return {
        "misfire_policy": fields.String(validate=validate.OneOf(MISFIRE_POLICIES)),
        "misfire_grace_s": StrictInteger(validate=validate.Range(min=0, max=WEEK_S)),
        "overlap_policy": fields.String(validate=validate.OneOf(OVERLAP_POLICIES)),
        "jitter_s": StrictInteger(validate=validate.Range(min=0, max=MAX_JITTER_S), metadata={
            "description": "Seconds: each fire is delayed by a fixed per-job offset in [0, jitter_s); "
                           "must be below the schedule's shortest interval between fires."}),
        "timeout_s": StrictInteger(validate=validate.Range(min=1, max=WEEK_S)),
        "max_retries": StrictInteger(validate=validate.Range(min=0, max=20)),
    }


class JobCreateSchema(Schema):
    job_id = JobId(validate=validate.Length(min=1, max=64),
                   metadata={"pattern": JOB_ID_PATTERN, "example": "job_reminder_daily",
                             "description": "Default: job_ + a transliterated slug of the name."})
    name = name_field(required=True)
    schedule = schedule_field("0 8 * * *", required=True)
    handler = handler_field(required=True)
    enabled = StrictBoolean(metadata={"example": True})
    timezone = timezone_field()
    args = args_field()
    misfire_policy = _policy_fields()["misfire_policy"]
    misfire_grace_s = _policy_fields()["misfire_grace_s"]
    overlap_policy = _policy_fields()["overlap_policy"]
    jitter_s = _policy_fields()["jitter_s"]
    timeout_s = _policy_fields()["timeout_s"]
    max_retries = _policy_fields()["max_retries"]
    start_at = _bound_fields()["start_at"]
    end_at = _bound_fields()["end_at"]
    max_fires = _bound_fields()["max_fires"]

    _handlers: frozenset[str] = frozenset()

    @classmethod
    def with_handlers(cls, names: frozenset[str]) -> JobCreateSchema:
        schema = cls()
        schema._handlers = names
        return schema

    @validates("handler")
    def check_handler(self, value: str, **kwargs: Any) -> None:
        """The handler must be one of the process's registry (given by `with_handlers`)."""
        if value not in self._handlers:
            known = ", ".join(sorted(self._handlers))
            raise ValidationError(f"Unknown handler {value!r}; known handlers: {known}.")

    @validates_schema(skip_on_field_errors=True)
    def check_jitter_fits(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "schedule" in data and "jitter_s" in data:
            check_jitter(data["schedule"], data["jitter_s"])

    @validates_schema(skip_on_field_errors=True)
    def check_bounds_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        check_bounds(data.get("start_at"), data.get("end_at"))


class JobUpdateSchema(JobCreateSchema):
    """Every mutable field, all optional; ``job_id`` cannot change. A jitter and a
    schedule of which only one is sent are checked against the stored other one
    by the route."""

    class Meta:
        exclude = ("job_id",)

    name = name_field()
    schedule = schedule_field("0 7 * * *")
    handler = handler_field()

    @validates_schema
    def not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Send at least one field to change.")


class PreviewSchema(Schema):
    schedule = schedule_field("30 2 * * *", required=True)
    timezone = timezone_field()
    after = Instant(metadata={"example": "2026-03-28T00:00:00Z",
                              "description": "Exclusive; an ISO-8601 instant with Z or an offset. Default: now."})
    count = StrictInteger(validate=validate.Range(min=1, max=100), metadata={"example": 3})


class BackfillSchema(Schema):
    start = Instant(required=True, metadata={"example": "2026-03-28T00:00:00Z",
                                             "description": "The first instant of the range (inclusive)."})
    end = Instant(required=True, metadata={
        "example": "2026-03-30T00:00:00Z",
        "description": f"The end of the range (exclusive); after start. At most {MAX_BACKFILL_SLOTS} slots."})
    reprocess = fields.String(validate=validate.OneOf(REPROCESS_CHOICES), metadata={
        "description": "missing (default): slots with no succeeded run; failed: slots whose run failed, timed out "
                       "or was abandoned (and none succeeded); all: every slot. A slot gets one backfill run."})

    @validates_schema(skip_on_field_errors=True)
    def check_range(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["end"] <= data["start"]:
            raise ValidationError({"end": ["end must be after start."]})


class PageQuerySchema(Schema):
    page = fields.Integer(strict=False, validate=validate.Range(min=1, max=1_000_000))
    limit = fields.Integer(strict=False, validate=validate.Range(min=1, max=100))


class JobRunsQuerySchema(PageQuerySchema):
    trigger = fields.String(validate=validate.OneOf(TRIGGERS))


class RunSearchQuerySchema(JobRunsQuerySchema):
    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
    job_id = JobId(validate=validate.Length(min=1, max=64))
    since = Instant()
    until = Instant()

    @validates_schema(skip_on_field_errors=True)
    def check_window(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "since" in data and "until" in data and data["until"] <= data["since"]:
            raise ValidationError({"until": ["until must be after since."]})


class JobListQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    handler = Text(validate=validate.Length(min=1, max=MAX_HANDLER_LENGTH))


# -- response schemas (documentation only) ------------------------------------
# Instants are answered as ``2026-03-26T08:00:00Z`` (``format: date-time``).


def _instant(nullable: bool = True) -> fields.DateTime:
    return fields.DateTime(required=True, allow_none=nullable, metadata={"example": "2026-03-26T08:00:00Z"})


def _count(minimum: int = 0, maximum: int | None = None, nullable: bool = False) -> fields.Integer:
    return fields.Integer(required=True, allow_none=nullable, validate=validate.Range(min=minimum, max=maximum))


class PaginationSchema(Schema):
    page = _count(1, 1_000_000)
    limit = _count(1, 100)
    total = _count()


class JobSchema(Schema):
    job_id = fields.String(required=True, validate=validate.Length(min=1, max=64),
                           metadata={"pattern": JOB_ID_PATTERN})
    name = fields.String(required=True)
    schedule = fields.String(required=True)
    timezone = fields.String(required=True)
    handler = fields.String(required=True, metadata={"description": "A handler name (see GET /handlers)."})
    args = fields.Dict(required=True, metadata={"description": ARGS_DESCRIPTION})
    enabled = fields.Boolean(required=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    lock_acquired = fields.Boolean(required=True)
    last_triggered_at = _instant()
    last_run_id = fields.String(required=True, allow_none=True)
    last_run_status = fields.String(required=True, allow_none=True)
    last_run_duration_ms = _count(nullable=True)
    next_trigger_at = _instant()
    created_at = _instant()
    updated_at = _instant()
    disabled_reason = fields.String(required=True, allow_none=True)
    misfire_policy = fields.String(required=True)
    misfire_grace_s = _count(0, WEEK_S)
    overlap_policy = fields.String(required=True)
    jitter_s = _count(0, MAX_JITTER_S)
    timeout_s = _count(1, WEEK_S)
    max_retries = _count(0, 20)
    start_at = _instant()
    end_at = _instant()
    max_fires = _count(1, MAX_MAX_FIRES, nullable=True)
    fires_left = fields.Integer(required=True, allow_none=True, validate=validate.Range(min=0, max=MAX_MAX_FIRES),
                                metadata={"description": "Scheduled fires left under max_fires; null when unbounded."})


class JobListSchema(Schema):
    data = fields.List(fields.Nested(JobSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class DeletedSchema(Schema):
    deleted = fields.Boolean(required=True)
    job_id = fields.String(required=True)


class TriggerSchema(Schema):
    job_id = fields.String(required=True)
    triggered_at = _instant(nullable=False)
    lock_acquired = fields.Boolean(required=True)
    run_id = fields.String(required=True)


class BackfillResultSchema(Schema):
    job_id = fields.String(required=True)
    backfill_id = fields.String(required=True, metadata={"description": "The same request gets the same id."})
    slots = _count(0, MAX_BACKFILL_SLOTS)
    created = _count(0, MAX_BACKFILL_SLOTS)


class AttemptSchema(Schema):
    attempt = _count()
    worker = fields.String(required=True, allow_none=True)
    status = fields.String(required=True)
    started_at = _instant()
    finished_at = _instant()
    duration_ms = _count(nullable=True)
    error = fields.Dict(required=True, allow_none=True)


class RunSchema(Schema):
    run_id = fields.String(required=True)
    job_id = fields.String(required=True)
    trigger = fields.String(required=True, validate=validate.OneOf(TRIGGERS))
    scheduled_for = _instant()
    status = fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    attempt = _count()
    worker = fields.String(required=True, allow_none=True)
    created_at = _instant()
    queued_at = _instant()
    started_at = _instant()
    finished_at = _instant()
    duration_ms = _count(nullable=True)
    lateness_ms = fields.Integer(required=True, allow_none=True)
    error = fields.Dict(required=True, allow_none=True)
    attempts = fields.List(fields.Nested(AttemptSchema), required=True,
                           metadata={"description": "One record per finished attempt, oldest first."})
    cancel_requested = fields.Boolean(required=True, metadata={
        "description": "POST /runs/{run_id}/cancel asked the run to stop (a running one stops within seconds)."})


class RunListSchema(Schema):
    data = fields.List(fields.Nested(RunSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class HandlerSchema(Schema):
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)


class HandlerListSchema(Schema):
    data = fields.List(fields.Nested(HandlerSchema), required=True)


class PreviewResultSchema(Schema):
    schedule = fields.String(required=True)
    timezone = fields.String(required=True)
    fires = fields.List(fields.DateTime(metadata={"example": "2026-03-29T00:30:00Z"}), required=True)


class SchedulerSchema(Schema):
    holder = fields.String(required=True, allow_none=True)
    pid = fields.Integer(required=True, allow_none=True)
    term = fields.Integer(required=True, allow_none=True)
    lease_expires_at = _instant()
    standbys = fields.List(fields.String(), required=True)


class WorkerSchema(Schema):
    worker = fields.String(required=True, metadata={"description": "hostname:pid, as in a run's worker"})
    hostname = fields.String(required=True)
    pid = fields.Integer(required=True)
    queue = fields.String(required=True)
    threads = fields.Integer(required=True)
    handlers = fields.List(fields.String(), required=True)
    in_progress = fields.Integer(required=True, metadata={"description": "Messages being processed now"})
    processed = fields.Integer(required=True, metadata={"description": "Messages processed since the process started"})
    started_at = _instant()
    seen_at = _instant()
    expires_at = _instant()


class WorkerListSchema(Schema):
    data = fields.List(fields.Nested(WorkerSchema), required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
    lock_acquired = fields.Boolean(metadata={"description": "Present (false) when a job's lease refused a trigger."})
