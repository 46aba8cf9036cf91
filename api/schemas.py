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

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from cronhive import cron
from cronhive.domain import (
    JOB_ID_PATTERN,
    JOB_ID_RE,
    JOB_STATUS_FILTERS,
    JOB_STATUSES,
    MAX_BACKFILL_SLOTS,
    MAX_LOG_BYTES,
    MAX_OUTPUT_BYTES,
    MAX_TAGS,
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    REPROCESS_CHOICES,
    RUN_STATUSES,
    TAG_PATTERN,
    TAG_RE,
    TRIGGERS,
    Notify,
)
from cronhive.enums import DeliveryStatus, NotifyEvent, RevisionAction
from cronhive.errors import InvalidSchedule
from cronhive.http_calls import DestinationGuard, header_problems, url_problems, validate_http_args
from cronhive.windows import MAX_REASON_LENGTH, MAX_WINDOW_JOBS, WINDOW_STATES

MAX_ARGS_BYTES = 16 * 1024
REVISION_ACTIONS = tuple(action.value for action in RevisionAction)
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


class Tag(fields.String):
    """A tag: ``^[a-z0-9][a-z0-9_.-]{0,63}$`` matched in full."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if TAG_RE.fullmatch(text) is None:
            raise ValidationError(f"A tag must match {TAG_PATTERN}.")
        return text


def tag_field(**kwargs: Any) -> Tag:
    return Tag(validate=validate.Length(min=1, max=64), metadata={"pattern": TAG_PATTERN, "example": "billing"},
               **kwargs)


class TagList(fields.List[str]):
    """At most `MAX_TAGS` distinct tags."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        tags = super()._deserialize(value, attr, data, **kwargs)
        if len(set(tags)) != len(tags):
            raise ValidationError("Give each tag once.")
        return tags


def tags_field(description: str, maximum: int = MAX_TAGS) -> TagList:
    return TagList(tag_field(), validate=validate.Length(max=maximum),
                   metadata={"uniqueItems": True, "example": ["billing", "nightly"], "description": description})


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
    return ArgsField(metadata={"description": ARGS_DESCRIPTION + " " + HTTP_ARGS_DESCRIPTION,
                               "x-max-bytes": MAX_ARGS_BYTES,
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


NOTIFY_EVENTS = tuple(member.value for member in NotifyEvent)
#: The built-in handler whose ``args`` are checked at create/update (`cronhive.http_calls`).
HTTP_HANDLER = "http"
HTTP_ARGS_DESCRIPTION = (
    "For handler `http`: `url` (http or https), `method` (default POST), `headers` (string map; a value "
    "`${secret:NAME}` is read on the worker from CRONHIVE_SECRET_NAME), `body` (any JSON, sent as JSON), "
    "`expect_status` (an integer or a list; default any 2xx), `timeout_s` (default 30). A literal IP host the "
    "destination guard (HTTP_HANDLER_ALLOWED_HOSTS) refuses is a 422."
)


class NotifySchema(Schema):
    """A job's ``notify``: where to POST which run events."""

    url = fields.String(required=True, validate=validate.Length(min=1, max=2048),
                        metadata={"example": "https://hooks.example.com/cronhive",
                                  "description": "http or https; checked by the destination guard "
                                                 "(HTTP_HANDLER_ALLOWED_HOSTS) at create/update for a literal IP "
                                                 "host and on every delivery after DNS resolution."})
    on = fields.List(fields.String(validate=validate.OneOf(NOTIFY_EVENTS)), required=True,
                     validate=validate.Length(min=1, max=len(NOTIFY_EVENTS)),
                     metadata={"example": ["failure", "recovery"],
                               "description": "failure: a run ended failed, timed_out or abandoned with no retry "
                                              "left; recovery: the first succeeded run after such a failure; "
                                              "skipped: a slot was recorded skipped."})
    headers = fields.Dict(keys=fields.String(), values=fields.String(),
                          metadata={"example": {"Authorization": "Bearer ${secret:HOOK_TOKEN}"},
                                    "description": "Sent with every delivery; a value ${secret:NAME} is read on "
                                                   "the worker from CRONHIVE_SECRET_NAME."})

    @validates_schema(skip_on_field_errors=True)
    def check(self, data: dict[str, Any], **kwargs: Any) -> None:
        problems: dict[str, list[str]] = {}
        if bad := url_problems(data["url"]):
            problems["url"] = bad
        if bad := header_problems(data.get("headers", {})):
            problems["headers"] = bad
        if len(set(data["on"])) != len(data["on"]):
            problems["on"] = ["Name each event once."]
        if problems:
            raise ValidationError(problems)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Notify:
        return Notify(url=data["url"], on=tuple(NotifyEvent(event) for event in data["on"]),
                      headers=dict(data.get("headers", {})))


def check_destinations(fields_: dict[str, Any], guard: DestinationGuard, *, handler: str | None = None,
                       args: dict[str, Any] | None = None) -> None:
    """The ``http`` handler's ``args`` (for a job whose handler is ``http``) and the
    ``notify`` URL, under the destination guard: a `ValidationError` naming the field
    (``{"args": {"url": [...]}}``, ``{"notify": {"url": [...]}}``) otherwise."""
    problems: dict[str, Any] = {}
    handler = fields_.get("handler", handler)
    args = fields_.get("args", args)
    if handler == HTTP_HANDLER and args is not None and (bad := validate_http_args(args, guard)):
        problems["args"] = bad
    notify = fields_.get("notify")
    if isinstance(notify, Notify) and (why := guard.check_literal(notify.url)):
        problems["notify"] = {"url": [why[0].upper() + why[1:] + "."]}
    if problems:
        raise ValidationError(problems)


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
    notify = fields.Nested(NotifySchema, allow_none=True,
                           metadata={"description": "POST a JSON notification on these run events; null: none."})
    tags = tags_field(f"Labels (at most {MAX_TAGS}, distinct) to select jobs by: GET /jobs?tag=, maintenance "
                      "windows, cronhive apply --selector.")
    start_at = _bound_fields()["start_at"]
    end_at = _bound_fields()["end_at"]
    max_fires = _bound_fields()["max_fires"]

    _handlers: frozenset[str] = frozenset()
    _guard: DestinationGuard = DestinationGuard()
    #: JobUpdateSchema: fields absent from the body keep their stored values
    partial_update = False

    @classmethod
    def with_handlers(cls, names: frozenset[str], guard: DestinationGuard | None = None) -> JobCreateSchema:
        schema = cls()
        schema._handlers = names
        if guard is not None:
            schema._guard = guard
        return schema

    @validates_schema(skip_on_field_errors=True)
    def check_destinations(self, data: dict[str, Any], **kwargs: Any) -> None:
        """``http`` args and the ``notify`` URL (an update that sends only one of handler and
        args is checked against the stored other one by the route)."""
        if not self.partial_update:
            check_destinations(data, self._guard, args={})
            return
        sent = {key: data[key] for key in ("notify",) if key in data}
        if "handler" in data and "args" in data:
            sent.update(handler=data["handler"], args=data["args"])
        check_destinations(sent, self._guard)

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

    partial_update = True

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
    status = fields.String(validate=validate.OneOf(JOB_STATUS_FILTERS))
    handler = Text(validate=validate.Length(min=1, max=MAX_HANDLER_LENGTH))
    tag = tag_field()


class MaintenanceCreateSchema(Schema):
    """``tags`` or ``job_ids`` (exactly one), ``end`` after ``start`` (default: now) and in the future."""

    tags = tags_field("The jobs carrying any of these tags (give tags or job_ids).")
    job_ids = fields.List(JobId(validate=validate.Length(min=1, max=64), metadata={"pattern": JOB_ID_PATTERN}),
                          validate=validate.Length(min=1, max=MAX_WINDOW_JOBS),
                          metadata={"description": "These jobs (give tags or job_ids)."})
    start = Instant(metadata={"example": "2026-03-28T01:00:00Z", "description": "Default: now."})
    end = Instant(required=True, metadata={"example": "2026-03-28T03:00:00Z",
                                           "description": "Exclusive; after start and in the future."})
    reason = Text(validate=validate.Length(min=1, max=MAX_REASON_LENGTH), metadata={"example": "database upgrade"})

    @validates_schema
    def one_selector(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("tags" in data) == ("job_ids" in data):
            raise ValidationError("Give exactly one of tags and job_ids.", field_name="_schema")
        if "tags" in data and not data["tags"]:
            raise ValidationError("Give at least one tag.", field_name="tags")

    @validates_schema(skip_on_field_errors=True)
    def ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "start" in data and data["end"] <= data["start"]:
            raise ValidationError("end must be after start.", field_name="end")


class MaintenanceListQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(WINDOW_STATES))


#: ``GET /jobs/:id/slots?from=&to=`` (``from`` is a keyword: the schema is built from a dict).
SlotQuerySchema = Schema.from_dict({"from": Instant(), "to": Instant()}, name="SlotQuerySchema")


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


_NULL_WHEN_INVALID = "Null only for an invalid job whose stored value is missing or not text."


class JobSchema(Schema):
    job_id = fields.String(required=True, validate=validate.Length(min=1, max=64),
                           metadata={"pattern": JOB_ID_PATTERN})
    name = fields.String(required=True, allow_none=True, metadata={"description": _NULL_WHEN_INVALID})
    schedule = fields.String(required=True, allow_none=True, metadata={"description": _NULL_WHEN_INVALID})
    timezone = fields.String(required=True, allow_none=True)
    handler = fields.String(required=True, allow_none=True, metadata={
        "description": "A handler name (see GET /handlers). " + _NULL_WHEN_INVALID})
    args = fields.Dict(required=True, metadata={"description": ARGS_DESCRIPTION})
    enabled = fields.Boolean(required=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES), metadata={
        "description": "active (enabled), disabled, or invalid: the stored document is not a valid job "
                       "(see invalid_reason); an invalid job never fires, and a PUT that sets each field "
                       "named in invalid_reason repairs it."})
    invalid_reason = fields.String(required=True, allow_none=True, metadata={
        "description": "For an invalid job: which fields of its stored document are not valid and why "
                       "(e.g. \"schedule: missing\"); null otherwise."})
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
    notify = fields.Nested(NotifySchema, required=True, allow_none=True)
    tags = fields.List(fields.String(metadata={"pattern": TAG_PATTERN}), required=True)
    paused_until = fields.DateTime(required=True, allow_none=True, metadata={
        "example": "2026-03-28T03:00:00Z",
        "description": "While an open maintenance window names the job (status paused): when it ends."})
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


class NotificationSchema(Schema):
    event = fields.String(required=True, validate=validate.OneOf(NOTIFY_EVENTS))
    url = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([member.value for member in DeliveryStatus]),
                           metadata={"description": "pending: being tried (with backoff); delivered; failed: "
                                                    "NOTIFY_MAX_ATTEMPTS attempts failed."})
    attempts = _count()
    last_attempt_at = _instant()
    delivered_at = _instant()
    response_status = fields.Integer(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)


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
    retry_at = fields.DateTime(required=True, allow_none=True, metadata={
        "example": "2026-03-26T08:00:27Z",
        "description": "While a failed run waits out its backoff (status queued): when its next attempt is "
                       "due. Null otherwise."})
    attempts = fields.List(fields.Nested(AttemptSchema), required=True,
                           metadata={"description": "One record per finished attempt, oldest first."})
    output = fields.Raw(required=True, allow_none=True, metadata={
        "description": f"The handler's return value (any JSON; null: none). Over {MAX_OUTPUT_BYTES} bytes of JSON "
                       "its longest strings are shortened (or, if that cannot fit it, it becomes the start of its "
                       "JSON text as a string) and output_truncated is true. A value that is not JSON is "
                       '{"unserializable": <type>, "repr": <text>}. The http handler\'s is {status, headers, body}.'})
    output_truncated = fields.Boolean(required=True)
    log = fields.String(required=True, allow_none=True, metadata={
        "description": f"The last {MAX_LOG_BYTES} bytes of the lines the handler logged through ctx.logger "
                       "(null: none)."})
    notifications = fields.List(fields.Nested(NotificationSchema), required=True, metadata={
        "description": "The notifications this run raised (job notify) and how their delivery went."})

    cancel_requested = fields.Boolean(required=True, metadata={
        "description": "POST /runs/{run_id}/cancel asked the run to stop (a running one stops within seconds)."})

class RunSummarySchema(RunSchema):
    """A run in a run list: every field but ``log`` (GET /runs/:run_id shows it)."""

    class Meta:
        exclude = ("log",)


class RunListSchema(Schema):
    data = fields.List(fields.Nested(RunSummarySchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


class RevisionSchema(Schema):
    revision = fields.Integer(required=True, validate=validate.Range(min=1),
                              metadata={"description": "The job's revision this change made (its ETag)."})
    at = _instant(nullable=False)
    actor = fields.String(required=True, allow_none=True, metadata={
        "description": "The name of the token that made the change (anonymous when no token is configured, "
                       "scheduler for a job it disabled; null: lost to a crash between the job's write and "
                       "its revision's, the revision repaired from the job)."})
    action = fields.String(required=True, validate=validate.OneOf(REVISION_ACTIONS))
    changes = fields.Dict(required=True, keys=fields.String(), values=fields.List(fields.Raw(allow_none=True)),
                          metadata={"description": "{field: [old, new]} for each field the change set "
                                                   "(create: old null; delete: new null)."})


class RevisionListSchema(Schema):
    data = fields.List(fields.Nested(RevisionSchema), required=True)
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


class MaintenanceSchema(Schema):
    maintenance_id = fields.String(required=True, metadata={"example": "mnt_20260328_010000_1a2b3c4d"})
    tags = fields.List(fields.String(), required=True, allow_none=True)
    job_ids = fields.List(fields.String(), required=True, allow_none=True)
    start = _instant(nullable=False)
    end = _instant(nullable=False)
    planned_end = _instant(nullable=False)
    reason = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(WINDOW_STATES))
    ended_early = fields.Boolean(required=True)
    created_at = _instant()
    created_by = fields.String(required=True, allow_none=True, metadata={"description": "The token's name (actor)."})
    ended_by = fields.String(required=True, allow_none=True, metadata={"description": "Who ended it early."})


class MaintenanceListSchema(Schema):
    data = fields.List(fields.Nested(MaintenanceSchema), required=True)
    pagination = fields.Nested(PaginationSchema, required=True)


SLOT_OUTCOMES = ("pending", "queued", "running", "succeeded", "failed", "timed_out", "skipped", "abandoned",
                 "coalesced", "missed")


class SlotSchema(Schema):
    scheduled_for = _instant(nullable=False)
    outcome = fields.String(required=True, validate=validate.OneOf(SLOT_OUTCOMES))
    run_id = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True, metadata={
        "description": "Why a slot was skipped (its run's error type: misfire, overlap, maintenance ...)."})


class SlotListSchema(Schema):
    data = fields.List(fields.Nested(SlotSchema), required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
    lock_acquired = fields.Boolean(metadata={"description": "Present (false) when a job's lease refused a trigger."})
