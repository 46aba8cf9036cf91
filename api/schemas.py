"""Marshmallow schemas: what clients may send (unknown fields rejected) and what
the API answers (used for the OpenAPI document)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from cronhive import cron
from cronhive.domain import JOB_ID_PATTERN, JOB_ID_RE, JOB_STATUSES, MISFIRE_POLICIES, OVERLAP_POLICIES
from cronhive.errors import InvalidSchedule

MAX_ARGS_BYTES = 16 * 1024
MAX_ARGS_DEPTH = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class JobId(fields.String):
    """``^[a-z0-9][a-z0-9_-]{0,63}$`` matched in full (``$`` alone would let a
    trailing newline through)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if JOB_ID_RE.fullmatch(text) is None:
            raise ValidationError(f"job_id must match {JOB_ID_PATTERN}.")
        return text


class StrictBoolean(fields.Boolean):
    """Only JSON ``true``/``false`` (``"yes"``, ``1`` and ``"true"`` are rejected)."""

    default_error_messages = {"invalid": "Not a valid boolean: use true or false."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictInteger(fields.Integer):
    """A JSON integer (no strings, floats or booleans)."""

    default_error_messages = {"invalid": "Not a valid integer."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return value


class ScheduleString(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return cron.parse_schedule(text).expression
        except InvalidSchedule as exc:
            raise ValidationError(exc.message) from None


class TimezoneString(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            cron.load_timezone(text)
        except InvalidSchedule as exc:
            raise ValidationError(exc.message) from None
        return text


class Instant(fields.String):
    """An ISO-8601 instant with an offset or ``Z`` (naive times are ambiguous: rejected)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
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
            if not isinstance(key, str) or not key or key.startswith("$") or "." in key or "\x00" in key:
                raise ValidationError("args keys must be non-empty and may not start with '$' or hold '.' or NUL.")
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
        if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_ARGS_BYTES:
            raise ValidationError(f"args is larger than {MAX_ARGS_BYTES} bytes.")
        return value


def _policy_fields(required: bool = False) -> dict[str, fields.Field]:
    return {
        "misfire_policy": fields.String(validate=validate.OneOf(MISFIRE_POLICIES)),
        "misfire_grace_s": StrictInteger(validate=validate.Range(min=0, max=7 * 86400)),
        "overlap_policy": fields.String(validate=validate.OneOf(OVERLAP_POLICIES)),
        "jitter_s": StrictInteger(validate=validate.Range(min=0, max=3600)),
        "timeout_s": StrictInteger(validate=validate.Range(min=1, max=7 * 86400)),
        "max_retries": StrictInteger(validate=validate.Range(min=0, max=20)),
    }


class JobFieldsMixin:
    """Validation of the handler name against the process's registry (set by the app)."""

    @validates("handler")
    def check_handler(self, value: str, **kwargs: Any) -> None:
        known = self.context_handlers()  # type: ignore[attr-defined]
        if value not in known:
            raise ValidationError(f"Unknown handler {value!r}; known handlers: {', '.join(sorted(known))}.")


def job_create_schema(handler_names: frozenset[str]) -> Schema:
    return JobCreateSchema.with_handlers(handler_names)


class JobCreateSchema(JobFieldsMixin, Schema):
    job_id = JobId(metadata={"pattern": JOB_ID_PATTERN, "example": "job_reminder_daily"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200),
                         metadata={"example": "Daily Reminder Check"})
    schedule = ScheduleString(required=True, validate=validate.Length(min=1, max=256),
                              metadata={"example": "0 8 * * *"})
    handler = fields.String(required=True, validate=validate.Length(min=1, max=200),
                            metadata={"example": "reminder_scheduler"})
    enabled = StrictBoolean(metadata={"example": True})
    timezone = TimezoneString(validate=validate.Length(min=1, max=64), metadata={"example": "Europe/Berlin"})
    args = ArgsField()
    misfire_policy = _policy_fields()["misfire_policy"]
    misfire_grace_s = _policy_fields()["misfire_grace_s"]
    overlap_policy = _policy_fields()["overlap_policy"]
    jitter_s = _policy_fields()["jitter_s"]
    timeout_s = _policy_fields()["timeout_s"]
    max_retries = _policy_fields()["max_retries"]

    _handlers: frozenset[str] = frozenset()

    @classmethod
    def with_handlers(cls, names: frozenset[str]) -> JobCreateSchema:
        schema = cls()
        schema._handlers = names
        return schema

    def context_handlers(self) -> frozenset[str]:
        return self._handlers


class JobUpdateSchema(JobCreateSchema):
    """Every mutable field, all optional; ``job_id`` cannot change."""

    class Meta:
        exclude = ("job_id",)

    name = fields.String(validate=validate.Length(min=1, max=200), metadata={"example": "Daily Reminder Check"})
    schedule = ScheduleString(validate=validate.Length(min=1, max=256), metadata={"example": "0 7 * * *"})
    handler = fields.String(validate=validate.Length(min=1, max=200), metadata={"example": "reminder_scheduler"})

    @validates_schema
    def not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Send at least one field to change.")


class PreviewSchema(Schema):
    schedule = ScheduleString(required=True, validate=validate.Length(min=1, max=256), metadata={"example": "30 2 * * *"})
    timezone = TimezoneString(validate=validate.Length(min=1, max=64), metadata={"example": "Europe/Berlin"})
    after = Instant(metadata={"example": "2026-03-28T00:00:00Z",
                              "description": "Exclusive; an ISO-8601 instant with Z or an offset. Default: now."})
    count = StrictInteger(validate=validate.Range(min=1, max=100), metadata={"example": 3})


class PageQuerySchema(Schema):
    page = fields.Integer(strict=False, validate=validate.Range(min=1, max=1_000_000))
    limit = fields.Integer(strict=False, validate=validate.Range(min=1, max=100))


class JobListQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    handler = fields.String(validate=validate.Length(min=1, max=200))


# -- response schemas (documentation only) ------------------------------------

Nullable = {"allow_none": True}


class PaginationSchema(Schema):
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    total = fields.Integer(required=True)


class JobSchema(Schema):
    job_id = fields.String(required=True)
    name = fields.String(required=True)
    schedule = fields.String(required=True)
    timezone = fields.String(required=True)
    handler = fields.String(required=True)
    args = fields.Dict(required=True)
    enabled = fields.Boolean(required=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    lock_acquired = fields.Boolean(required=True)
    last_triggered_at = fields.String(required=True, **Nullable)
    last_run_id = fields.String(required=True, **Nullable)
    last_run_status = fields.String(required=True, **Nullable)
    last_run_duration_ms = fields.Integer(required=True, **Nullable)
    next_trigger_at = fields.String(required=True, **Nullable)
    created_at = fields.String(required=True)
    updated_at = fields.String(required=True)
    disabled_reason = fields.String(required=True, **Nullable)
    misfire_policy = fields.String(required=True)
    misfire_grace_s = fields.Integer(required=True)
    overlap_policy = fields.String(required=True)
    jitter_s = fields.Integer(required=True)
    timeout_s = fields.Integer(required=True)
    max_retries = fields.Integer(required=True)


class JobListSchema(Schema):
    data = fields.List(fields.Nested(JobSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class DeletedSchema(Schema):
    deleted = fields.Boolean(required=True)
    job_id = fields.String(required=True)


class TriggerSchema(Schema):
    job_id = fields.String(required=True)
    triggered_at = fields.String(required=True)
    lock_acquired = fields.Boolean(required=True)
    run_id = fields.String(required=True)


class AttemptSchema(Schema):
    attempt = fields.Integer(required=True, **Nullable)
    worker = fields.String(required=True, **Nullable)
    status = fields.String(required=True, **Nullable)
    started_at = fields.String(required=True, **Nullable)
    finished_at = fields.String(required=True, **Nullable)
    duration_ms = fields.Integer(required=True, **Nullable)
    error = fields.Dict(required=True, **Nullable)


class RunSchema(Schema):
    run_id = fields.String(required=True)
    job_id = fields.String(required=True)
    trigger = fields.String(required=True)
    scheduled_for = fields.String(required=True, **Nullable)
    status = fields.String(required=True)
    attempt = fields.Integer(required=True)
    worker = fields.String(required=True, **Nullable)
    created_at = fields.String(required=True, **Nullable)
    queued_at = fields.String(required=True, **Nullable)
    started_at = fields.String(required=True, **Nullable)
    finished_at = fields.String(required=True, **Nullable)
    duration_ms = fields.Integer(required=True, **Nullable)
    lateness_ms = fields.Integer(required=True, **Nullable)
    error = fields.Dict(required=True, **Nullable)
    attempts = fields.List(fields.Nested(AttemptSchema), required=True,
                           metadata={"description": "One record per finished attempt, oldest first."})


class RunListSchema(Schema):
    data = fields.List(fields.Nested(RunSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class HandlerSchema(Schema):
    name = fields.String(required=True)
    description = fields.String(required=True, **Nullable)


class HandlerListSchema(Schema):
    data = fields.List(fields.Nested(HandlerSchema), required=True)


class PreviewResultSchema(Schema):
    schedule = fields.String(required=True)
    timezone = fields.String(required=True)
    fires = fields.List(fields.String(), required=True)


class SchedulerSchema(Schema):
    holder = fields.String(required=True, **Nullable)
    pid = fields.Integer(required=True, **Nullable)
    term = fields.Integer(required=True, **Nullable)
    lease_expires_at = fields.String(required=True, **Nullable)
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
    started_at = fields.String(required=True, **Nullable)
    seen_at = fields.String(required=True, **Nullable)
    expires_at = fields.String(required=True, **Nullable)


class WorkerListSchema(Schema):
    data = fields.List(fields.Nested(WorkerSchema), required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
    lock_acquired = fields.Boolean()
