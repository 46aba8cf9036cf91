"""The store edge: MongoDB documents ↔ typed values, and the filters and updates
built from typed values. Nothing outside `cronhive.store` sees a document.

Compatibility (a database written by any earlier version is read, and a value
read here writes back the very document it was read from):

* `job_from_doc` / `run_from_doc` remember the document's layout (`Stored`: its
  keys in order, and the fields this version does not model, e.g. the leader's
  ``sched_mark``, the reaper's ``recovery_for``), and `job_to_doc` / `run_to_doc`
  lay the document out the same way: same keys, same order, same BSON types
  (values are passed through as decoded — an ``Int64`` stays one). A value made
  in code (no layout) is laid out as the code that first writes it always did.
* A field absent from an old document reads as its default (`JOB_ABSENT`,
  `RUN_ABSENT`) and is written back only if it changed from that default.
* Stored nulls read as None where None means something (``timezone``,
  ``timeout_s``: no time limit, the timestamps...). A stored null ``args`` or
  policy other than ``timeout_s`` — no version writes one — reads as its default,
  as every reader always treated it.
* Enumerations are stored as their plain strings (`StrEnum`); an unknown run
  status or trigger raises `ValueError` here.
* A job document that cannot be a job (``name``, ``schedule`` or ``handler``
  missing or not text, an unparsable schedule or time zone, a policy of the wrong
  type or out of range...) decodes as an *invalid* job (`Job.invalid_reason`),
  never raises: the API shows it (status ``invalid``), the scheduler disables it,
  a worker never runs it, a full ``PUT`` repairs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cronhive import cron
from cronhive.domain import (
    DEFAULT_POLICIES,
    DEFAULT_TIMEZONE,
    POLICY_RANGES,
    AttemptEnd,
    AttemptRecord,
    AttemptStart,
    Heartbeat,
    Job,
    Notification,
    Notify,
    Run,
    RunError,
    RunFilter,
    RunOutput,
    Stored,
)
from cronhive.enums import (
    DeliveryStatus,
    JobStatus,
    LeaseScope,
    MisfirePolicy,
    NotifyEvent,
    OverlapPolicy,
    RevisionAction,
    RunStatus,
    Trigger,
)
from cronhive.errors import InvalidSchedule
from cronhive.idempotency import IdempotencyRecord, StoredResponse
from cronhive.leases import Lease
from cronhive.revisions import Revision
from cronhive.slots import JobAdvance
from cronhive.windows import MaintenanceWindow

Document = dict[str, Any]

LEASE_FIELD = "lease"
TERM_FIELD = "lease_term"

#: A job document's keys in the order `MongoStore.create_job` writes them.
JOB_KEYS = (
    "_id", "name", "schedule", "timezone", "handler", "args", "enabled", "misfire_policy", "misfire_grace_s",
    "overlap_policy", "jitter_s", "timeout_s", "max_retries", "created_at", "updated_at", "revision",
    "next_fire_at", "due_at", "last_triggered_at", "last_run_id", "last_run_status", "last_run_duration_ms",
    "lease", "lease_term", "disabled_reason", "buffered_run_id", "incarnation",
)
#: Job fields written only once set (a job without them has none of these keys, so an
#: untagged, unbounded job's document keeps the shape every earlier version wrote).
JOB_LATER_KEYS = ("tags", "start_at", "end_at", "max_fires", "fires")
#: What a job field absent from its document reads as (any field not listed: None).
JOB_ABSENT: dict[str, Any] = {"timezone": DEFAULT_TIMEZONE, "args": {}, "enabled": False, "name": "",
                              "tags": [], "fires": 0, **DEFAULT_POLICIES}

#: A run document's keys as first written (`new_run`); the rest follow as first set.
RUN_KEYS = (
    "_id", "job_id", "trigger", "scheduled_for", "status", "attempt", "lease_token", "worker", "created_at",
    "queued_at", "started_at", "finished_at", "duration_ms", "lateness_ms", "error", "job_incarnation",
)
RUN_LATER_KEYS = ("sched_term", "lease_term", "lease", "lease_holder", "lease_scope", "retry_at", "attempts",
                  "covers_from", "covers_until", "cancel_requested", "job_revision",
                  "attempt_id")
#: Written only when there is something to keep (run output, log, notifications).
RUN_OUTPUT_KEYS = ("output_json", "output_truncated", "log", "notifications", "notify_due")
RUN_ABSENT: dict[str, Any] = {"attempt": 0, "attempts": [], "output_truncated": False, "notifications": [],
                              "cancel_requested": False}


def _stored(doc: Mapping[str, Any], known: frozenset[str]) -> Stored:
    unknown = doc.keys() - known
    return Stored(tuple(doc), {key: doc[key] for key in unknown} if unknown else {})


def _laid_out(full: Document, stored: Stored | None, first_keys: tuple[str, ...],
              absent: Mapping[str, Any]) -> Document:
    """``full`` (every modelled field, in the order fields are first written) laid out as
    ``stored`` (or, for a value made in code, as first written): the stored keys in
    their order, then any other field whose value is not what its absence means."""
    keys = stored.keys if stored is not None else first_keys
    extra = stored.extra if stored is not None else {}
    doc = {key: full[key] if key in full else extra[key] for key in keys}
    for key, value in full.items():
        if key not in doc and value != absent.get(key):
            doc[key] = value
    return doc


# -- leases -----------------------------------------------------------------------------


def lease_from_doc(scope: LeaseScope, doc_id: str, sub: Mapping[str, Any]) -> Lease:
    return Lease(scope=scope, doc_id=doc_id, holder=sub["holder"], token=sub["token"],
                 expires_at=sub["expires_at"], run_id=sub.get("run_id"))


def lease_to_doc(lease: Lease) -> Document:
    return {"holder": lease.holder, "run_id": lease.run_id, "token": lease.token, "expires_at": lease.expires_at}


def _lease_or_none(scope: LeaseScope, doc_id: str, sub: Any) -> Lease | None:
    return lease_from_doc(scope, doc_id, sub) if sub else None


def lease_filter(lease: Lease) -> Document:
    """The filter every write made under ``lease`` carries (fencing): its document,
    holder and token. A stale holder's write matches nothing."""
    return {"_id": lease.doc_id, f"{LEASE_FIELD}.holder": lease.holder, f"{LEASE_FIELD}.token": lease.token}


def lease_as_read(lease: Lease | None, term: int | None) -> Document:
    """The conditions that a document's lease is still exactly as read (``lease`` and
    ``lease_term``): for a write decided on what was read."""
    expect: Document = {TERM_FIELD: term}
    if lease is None:
        expect[LEASE_FIELD] = None
    else:
        expect.update({f"{LEASE_FIELD}.holder": lease.holder, f"{LEASE_FIELD}.token": lease.token,
                       f"{LEASE_FIELD}.expires_at": lease.expires_at})
    return expect


def claimable_filter(own: tuple[str, ...], now: datetime) -> Document:
    """Matches a lease that is free, expired at ``now``, or held by one of ``own``."""
    return {"$or": [{LEASE_FIELD: None}, {f"{LEASE_FIELD}.expires_at": {"$lte": now}},
                    {f"{LEASE_FIELD}.holder": {"$in": list(own)}}]}


# -- errors and attempts -------------------------------------------------------------------


def error_from_doc(doc: Any) -> RunError | None:
    return RunError(doc["type"], doc["message"], doc.get("traceback")) if doc else None


def error_to_doc(error: RunError | None) -> Document | None:
    if error is None:
        return None
    doc: Document = {"type": error.type, "message": error.message}
    if error.traceback is not None:
        doc["traceback"] = error.traceback
    return doc


def attempt_from_doc(doc: Mapping[str, Any]) -> AttemptRecord:
    return AttemptRecord(attempt=doc["attempt"], worker=doc.get("worker"), status=RunStatus(doc["status"]),
                         started_at=doc.get("started_at"), finished_at=doc.get("finished_at"),
                         duration_ms=doc.get("duration_ms"), error=error_from_doc(doc.get("error")))


def attempt_to_doc(record: AttemptRecord) -> Document:
    return {"attempt": record.attempt, "worker": record.worker, "status": record.status,
            "started_at": record.started_at, "finished_at": record.finished_at, "duration_ms": record.duration_ms,
            "error": error_to_doc(record.error)}


# -- jobs ------------------------------------------------------------------------------------

_JOB_KNOWN = frozenset((*JOB_KEYS, *JOB_LATER_KEYS, "notify"))


def notify_from_doc(doc: Any) -> Notify | None:
    if not doc:
        return None
    return Notify(url=doc["url"], on=tuple(NotifyEvent(event) for event in doc.get("on") or ()),
                  headers=dict(doc.get("headers") or {}))


def notify_to_doc(notify: Notify | None) -> Document | None:
    if notify is None:
        return None
    return {"url": notify.url, "on": [str(event) for event in notify.on], "headers": dict(notify.headers)}


def job_update_set(update: Mapping[str, Any]) -> Document:
    """The ``$set`` of a job update (`cronhive.domain.job_update`): typed values as stored."""
    return {key: notify_to_doc(value) if key == "notify" else value for key, value in update.items()}


class _JobDecoder:
    """Reads a job document's definition fields, noting each one that cannot be part of a
    job (missing, of the wrong type, out of range, an unparsable schedule or time zone)
    instead of raising: such a document decodes as an *invalid* job (`Job.invalid_reason`
    says which fields and why), so every reader can show it and none crashes on it."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.defects: dict[str, str] = {}

    def bad(self, key: str, why: str) -> None:
        self.defects.setdefault(key, why)

    def text(self, key: str) -> str:
        value = self.doc.get(key)
        if value is None:
            self.bad(key, "missing")
        elif not isinstance(value, str):
            self.bad(key, f"a {type(value).__name__}, not a string")
        elif not value.strip():
            self.bad(key, "empty")
        else:
            return value
        return ""

    def schedule(self) -> str:
        value = self.text("schedule")
        if value:
            try:
                cron.parse_schedule(value)
            except InvalidSchedule as exc:
                self.bad("schedule", f"{value[:100]!r} does not parse: {exc.message}")
        return value

    def timezone(self) -> str | None:
        if "timezone" not in self.doc:
            return DEFAULT_TIMEZONE
        value = self.doc["timezone"]
        if value is None:
            return None  # a stored null: computed as UTC
        if not isinstance(value, str):
            self.bad("timezone", f"a {type(value).__name__}, not a string")
            return None
        try:
            cron.load_timezone(value)
        except InvalidSchedule as exc:
            self.bad("timezone", exc.message)
        return value

    def args(self) -> dict[str, Any]:
        value = self.doc.get("args")
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad("args", f"a {type(value).__name__}, not an object")
            return {}
        return value

    def enabled(self) -> bool:
        value = self.doc.get("enabled")
        if value is None:
            return False
        if not isinstance(value, bool):
            self.bad("enabled", f"a {type(value).__name__}, not a boolean")
            return False
        return value

    def choice(self, key: str, kind: type[MisfirePolicy] | type[OverlapPolicy]) -> Any:
        value = self.doc.get(key)
        if value is None:
            return DEFAULT_POLICIES[key]
        try:
            return kind(value)
        except ValueError:
            self.bad(key, f"{str(value)[:40]!r} is not one of {', '.join(kind)}")
            return DEFAULT_POLICIES[key]

    def integer(self, key: str, *, nullable: bool = False) -> Any:
        if key not in self.doc:
            return DEFAULT_POLICIES[key]
        value = self.doc[key]
        if value is None:
            return None if nullable else DEFAULT_POLICIES[key]
        low, high = POLICY_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(key, f"a {type(value).__name__}, not an integer")
        elif not low <= value <= high:
            self.bad(key, f"{value} is outside {low}..{high}")
        else:
            return value
        return DEFAULT_POLICIES[key]

    def reason(self) -> str | None:
        if not self.defects:
            return None
        return "; ".join(f"{key}: {why}" for key, why in self.defects.items())


def _run_status_or_none(value: Any) -> RunStatus | None:
    """``last_run_status`` as stored; an unknown value (no version writes one) reads as None."""
    try:
        return RunStatus(value) if value is not None else None
    except ValueError:
        return None


def job_from_doc(doc: Mapping[str, Any]) -> Job:
    """The job a ``jobs`` document holds (see the module docstring for absent fields).
    A projection without ``args`` (planning reads none) gives it empty. A document that
    cannot be a job decodes as an invalid one (`_JobDecoder`), never raises."""
    job_id = doc["_id"]
    check = _JobDecoder(doc)
    return Job(
        job_id=job_id,
        name=check.text("name"),
        schedule=check.schedule(),
        handler=check.text("handler"),
        timezone=check.timezone(),
        args=check.args(),
        enabled=check.enabled(),
        misfire_policy=check.choice("misfire_policy", MisfirePolicy),
        misfire_grace_s=check.integer("misfire_grace_s"),
        overlap_policy=check.choice("overlap_policy", OverlapPolicy),
        jitter_s=check.integer("jitter_s"),
        timeout_s=check.integer("timeout_s", nullable=True),
        max_retries=check.integer("max_retries"),
        created_at=doc.get("created_at"),
        updated_at=doc.get("updated_at"),
        revision=doc.get("revision"),
        next_fire_at=doc.get("next_fire_at"),
        due_at=doc.get("due_at"),
        last_triggered_at=doc.get("last_triggered_at"),
        last_run_id=doc.get("last_run_id"),
        last_run_status=_run_status_or_none(doc.get("last_run_status")),
        last_run_duration_ms=doc.get("last_run_duration_ms"),
        lease=_lease_or_none(LeaseScope.JOB, job_id, doc.get(LEASE_FIELD)),
        lease_term=doc.get(TERM_FIELD),
        disabled_reason=doc.get("disabled_reason"),
        buffered_run_id=doc.get("buffered_run_id"),
        notify=notify_from_doc(doc.get("notify")),
        invalid_reason=check.reason(),
        invalid_fields=tuple(check.defects),
        incarnation=doc.get("incarnation"),
        tags=tuple(doc.get("tags") or ()),
        start_at=doc.get("start_at"),
        end_at=doc.get("end_at"),
        max_fires=doc.get("max_fires"),
        fires=doc.get("fires") or 0,
        stored=_stored(doc, _JOB_KNOWN),
    )


def job_to_doc(job: Job) -> Document:
    """The ``jobs`` document of ``job`` (laid out as it was read, or as created)."""
    full: Document = {
        "_id": job.job_id,
        "name": job.name,
        "schedule": job.schedule,
        "timezone": job.timezone,
        "handler": job.handler,
        "args": job.args,
        "enabled": job.enabled,
        "misfire_policy": job.misfire_policy,
        "misfire_grace_s": job.misfire_grace_s,
        "overlap_policy": job.overlap_policy,
        "jitter_s": job.jitter_s,
        "timeout_s": job.timeout_s,
        "max_retries": job.max_retries,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "revision": job.revision,
        "next_fire_at": job.next_fire_at,
        "due_at": job.due_at,
        "last_triggered_at": job.last_triggered_at,
        "last_run_id": job.last_run_id,
        "last_run_status": job.last_run_status,
        "last_run_duration_ms": job.last_run_duration_ms,
        "lease": lease_to_doc(job.lease) if job.lease is not None else None,
        "lease_term": job.lease_term,
        "disabled_reason": job.disabled_reason,
        "buffered_run_id": job.buffered_run_id,
        "notify": notify_to_doc(job.notify),
        "incarnation": job.incarnation,
        "tags": list(job.tags),
        "start_at": job.start_at,
        "end_at": job.end_at,
        "max_fires": job.max_fires,
        "fires": job.fires,
    }
    return _laid_out(full, job.stored, JOB_KEYS, JOB_ABSENT)


def job_status_filter(status: JobStatus) -> Document:
    """The ``jobs`` filter of the jobs whose `Job.status` is ``status``: ``disabled`` —
    not enabled; ``completed`` — enabled, bounded (``end_at`` or ``max_fires``) and never
    due again (``due_at`` null); ``active`` — the other enabled ones."""
    if status == JobStatus.DISABLED:
        return {"enabled": False}
    if status == JobStatus.COMPLETED:
        return {"enabled": True, "due_at": None,
                "$or": [{"end_at": {"$ne": None}}, {"max_fires": {"$ne": None}}]}
    return {"enabled": True, "$or": [{"due_at": {"$ne": None}}, {"end_at": None, "max_fires": None}]}


def advance_write(advance: JobAdvance) -> tuple[Document, Document]:
    """The compare-and-set of a `JobAdvance`: (conditions, ``$set``), before the leader's
    fencing term is added. The conditions: the job's ``revision`` and ``next_fire_at``
    as read, its lease as read when the overlap decision read it, ``buffered_run_id``
    as read under ``buffer_one``."""
    job = advance.job
    expect: Document = {"revision": job.revision, "next_fire_at": job.next_fire_at}
    changes: Document = {"next_fire_at": advance.next_fire_at, "due_at": advance.due_at}
    if advance.lease_decided:
        expect.update(lease_as_read(job.lease, job.lease_term))
    if advance.reservation is not None:
        changes[TERM_FIELD] = advance.reservation.token
        changes[LEASE_FIELD] = lease_to_doc(advance.reservation)
    if advance.buffered_run_id is not None:
        changes["buffered_run_id"] = advance.buffered_run_id
    if advance.buffer_decided:
        expect["buffered_run_id"] = job.buffered_run_id
    if advance.fired_counted:
        # counted in the very write that moves the job past the slots (compare-and-set on them)
        changes["fires"] = job.fires + advance.fired_counted
    return expect, changes


# -- runs ------------------------------------------------------------------------------------

_RUN_KNOWN = frozenset(RUN_KEYS + RUN_LATER_KEYS + RUN_OUTPUT_KEYS)


def output_from_doc(doc: Mapping[str, Any]) -> RunOutput:
    """``output`` is stored as its JSON text (any JSON value is storable that way: keys
    with ``$`` or ``.``, integers beyond 64 bits)."""
    text = doc.get("output_json")
    return RunOutput(output=json.loads(text) if text is not None else None,
                     truncated=bool(doc.get("output_truncated")), log=doc.get("log"))


def output_set(output: RunOutput) -> Document:
    """The fields an attempt's output writes (only what there is)."""
    fields: Document = {}
    if output.output is not None:
        fields["output_json"] = json.dumps(output.output, separators=(",", ":"), ensure_ascii=False)
        fields["output_truncated"] = output.truncated
    if output.log is not None:
        fields["log"] = output.log
    return fields


#: What `output_set` may have written: cleared when a new attempt starts.
OUTPUT_FIELDS = ("output_json", "output_truncated", "log")


def notification_from_doc(doc: Mapping[str, Any]) -> Notification:
    return Notification(
        event=NotifyEvent(doc["event"]), url=doc["url"], headers=dict(doc.get("headers") or {}),
        job_name=doc.get("job_name"), status=DeliveryStatus(doc.get("status", DeliveryStatus.PENDING)),
        attempts=doc.get("attempts") or 0, created_at=doc.get("created_at"),
        last_attempt_at=doc.get("last_attempt_at"), delivered_at=doc.get("delivered_at"),
        response_status=doc.get("response_status"), error=doc.get("error"),
    )


def notification_to_doc(notification: Notification) -> Document:
    return {
        "event": notification.event, "url": notification.url, "headers": dict(notification.headers),
        "job_name": notification.job_name, "status": notification.status, "attempts": notification.attempts,
        "created_at": notification.created_at, "last_attempt_at": notification.last_attempt_at,
        "delivered_at": notification.delivered_at, "response_status": notification.response_status,
        "error": notification.error,
    }


def outbox_update(notifications: tuple[Notification, ...], due: datetime | None) -> tuple[Document, Document]:
    """(``$set``, ``$push``) parts that add ``notifications`` to a run (its outbox) due at ``due``."""
    if not notifications:
        return {}, {}
    return ({"notify_due": due},
            {"notifications": {"$each": [notification_to_doc(item) for item in notifications]}})


def run_from_doc(doc: Mapping[str, Any]) -> Run:
    """The run a ``runs`` document holds."""
    run_id = doc["_id"]
    scope = doc.get("lease_scope")
    return Run(
        run_id=run_id,
        job_id=doc["job_id"],
        trigger=Trigger(doc["trigger"]),
        status=RunStatus(doc["status"]),
        scheduled_for=doc.get("scheduled_for"),
        attempt=doc.get("attempt") or 0,
        lease_token=doc.get("lease_token"),
        worker=doc.get("worker"),
        created_at=doc.get("created_at"),
        queued_at=doc.get("queued_at"),
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        duration_ms=doc.get("duration_ms"),
        lateness_ms=doc.get("lateness_ms"),
        error=error_from_doc(doc.get("error")),
        sched_term=doc.get("sched_term"),
        lease_term=doc.get(TERM_FIELD),
        lease=_lease_or_none(LeaseScope.RUN, run_id, doc.get(LEASE_FIELD)),
        lease_holder=doc.get("lease_holder"),
        lease_scope=LeaseScope(scope) if scope is not None else None,
        retry_at=doc.get("retry_at"),
        attempts=tuple(attempt_from_doc(record) for record in doc.get("attempts") or ()),
        output=output_from_doc(doc),
        notifications=tuple(notification_from_doc(item) for item in doc.get("notifications") or ()),
        notify_due=doc.get("notify_due"),
        job_incarnation=doc.get("job_incarnation"),
        job_revision=doc.get("job_revision"),
        attempt_id=doc.get("attempt_id"),
        covers_from=doc.get("covers_from"),
        covers_until=doc.get("covers_until"),
        cancel_requested=bool(doc.get("cancel_requested")),
        stored=_stored(doc, _RUN_KNOWN),
    )


def run_to_doc(run: Run) -> Document:
    """The ``runs`` document of ``run`` (laid out as it was read, or as first written)."""
    full: Document = {
        "_id": run.run_id,
        "job_id": run.job_id,
        "trigger": run.trigger,
        "scheduled_for": run.scheduled_for,
        "status": run.status,
        "attempt": run.attempt,
        "lease_token": run.lease_token,
        "worker": run.worker,
        "created_at": run.created_at,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_ms": run.duration_ms,
        "lateness_ms": run.lateness_ms,
        "error": error_to_doc(run.error),
        "sched_term": run.sched_term,
        "lease_term": run.lease_term,
        "lease": lease_to_doc(run.lease) if run.lease is not None else None,
        "lease_holder": run.lease_holder,
        "lease_scope": run.lease_scope,
        "retry_at": run.retry_at,
        "attempts": [attempt_to_doc(record) for record in run.attempts],
        "output_json": output_set(run.output).get("output_json"),
        "output_truncated": run.output.truncated,
        "log": run.output.log,
        "notifications": [notification_to_doc(item) for item in run.notifications],
        "notify_due": run.notify_due,
        "job_incarnation": run.job_incarnation,
        "job_revision": run.job_revision,
        "attempt_id": run.attempt_id,
        "covers_from": run.covers_from,
        "covers_until": run.covers_until,
        "cancel_requested": run.cancel_requested,
    }
    return _laid_out(full, run.stored, RUN_KEYS, RUN_ABSENT)


def run_filter_query(where: RunFilter) -> Document:
    """The ``runs`` filter of a `RunFilter`."""
    query: Document = {}
    if where.job_id is not None:
        query["job_id"] = where.job_id
    if where.status is not None:
        query["status"] = where.status
    if where.trigger is not None:
        query["trigger"] = where.trigger
    created: Document = {}
    if where.since is not None:
        created["$gte"] = where.since
    if where.until is not None:
        created["$lt"] = where.until
    if created:
        query["created_at"] = created
    return query


def attempt_start_set(start: AttemptStart) -> Document:
    """The ``$set`` that marks a run ``running`` for a new attempt (clearing the
    previous attempt's outcome)."""
    return {
        "status": RunStatus.RUNNING,
        "attempt": start.number,
        "lease_token": start.lease.token,
        "lease_holder": start.lease.holder,
        "lease_scope": start.lease.scope,
        "worker": start.worker,
        "started_at": start.started_at,
        "lateness_ms": start.lateness_ms,
        "finished_at": None,
        "duration_ms": None,
        "error": None,
        "retry_at": None,
        "attempt_id": start.attempt_id,
    }


def attempt_end_set(end: AttemptEnd) -> Document:
    """The ``$set`` that records how an attempt ended (see `AttemptEnd`)."""
    fields: Document = {"status": end.status}
    if end.status.is_final:
        fields["finished_at"] = end.finished_at
    if end.duration_ms is not None:
        fields["duration_ms"] = end.duration_ms
    fields["error"] = error_to_doc(end.error)
    fields["retry_at"] = end.retry_at
    if end.releases_run_lease:
        fields[LEASE_FIELD] = None
    if end.output is not None:
        fields.update(output_set(end.output))
    return fields


# -- maintenance windows ------------------------------------------------------------------


def window_from_doc(doc: Mapping[str, Any]) -> MaintenanceWindow:
    return MaintenanceWindow(maintenance_id=doc["_id"], start=doc["start"], end=doc["end"],
                             tags=tuple(doc.get("tags") or ()), job_ids=tuple(doc.get("job_ids") or ()),
                             reason=doc.get("reason"), created_at=doc.get("created_at"),
                             planned_end=doc.get("planned_end"), ended_early_at=doc.get("ended_early_at"),
                             created_by=doc.get("created_by"), ended_by=doc.get("ended_by"))


def window_to_doc(window: MaintenanceWindow) -> Document:
    return {"_id": window.maintenance_id, "tags": list(window.tags), "job_ids": list(window.job_ids),
            "start": window.start, "end": window.end, "planned_end": window.planned_end or window.end,
            "reason": window.reason, "created_at": window.created_at, "ended_early_at": window.ended_early_at,
            "created_by": window.created_by, "ended_by": window.ended_by}


def heartbeat_set(beat: Heartbeat) -> Document:
    return {"role": beat.role, "term": beat.term, "host": beat.host, "pid": beat.pid}


# -- job revisions ---------------------------------------------------------------------------


def revision_doc_id(job_id: str, revision: int) -> str:
    """A revision's ``_id``: ``job_id:revision`` (``:`` never occurs in a job id)."""
    return f"{job_id}:{revision}"


def revision_to_doc(revision: Revision) -> Document:
    """The ``job_revisions`` document of ``revision`` (``changes`` as ``{field: [old, new]}``)."""
    return {
        "_id": revision_doc_id(revision.job_id, revision.revision),
        "job_id": revision.job_id,
        "revision": revision.revision,
        "at": revision.at,
        "actor": revision.actor,
        "action": revision.action,
        "changes": {name: [old, new] for name, (old, new) in revision.changes.items()},
        "definition": dict(revision.definition),
        "write_id": revision.write_id,
    }


def revision_from_doc(doc: Mapping[str, Any]) -> Revision:
    return Revision(
        job_id=doc["job_id"],
        revision=doc["revision"],
        at=doc["at"],
        actor=doc.get("actor"),
        action=RevisionAction(doc["action"]),
        changes={name: (pair[0], pair[1]) for name, pair in (doc.get("changes") or {}).items()},
        definition=doc.get("definition") or {},
        write_id=doc.get("write_id") or "",
    )


# -- idempotency keys -------------------------------------------------------------------------


def idempotency_to_doc(record: IdempotencyRecord) -> Document:
    response = record.response
    return {
        "_id": record.key_id,
        "actor": record.actor,
        "endpoint": record.endpoint,
        "fingerprint": record.fingerprint,
        "claim": record.claim,
        "claimed_until": record.claimed_until,
        "expires_at": record.expires_at,
        "response": stored_response_to_doc(response) if response is not None else None,
    }


def stored_response_to_doc(response: StoredResponse) -> Document:
    return {"status": response.status, "body": response.body, "headers": [list(pair) for pair in response.headers]}


def idempotency_from_doc(doc: Mapping[str, Any]) -> IdempotencyRecord:
    response = doc.get("response")
    return IdempotencyRecord(
        key_id=doc["_id"],
        actor=doc["actor"],
        endpoint=doc["endpoint"],
        fingerprint=doc["fingerprint"],
        claim=doc["claim"],
        claimed_until=doc["claimed_until"],
        expires_at=doc["expires_at"],
        response=StoredResponse(response["status"], bytes(response["body"]),
                                tuple((str(name), str(value)) for name, value in response["headers"]))
        if response else None,
    )


__all__ = [
    "Document",
    "advance_write",
    "attempt_end_set",
    "attempt_from_doc",
    "attempt_start_set",
    "attempt_to_doc",
    "claimable_filter",
    "error_to_doc",
    "heartbeat_set",
    "idempotency_from_doc",
    "idempotency_to_doc",
    "job_from_doc",
    "job_status_filter",
    "job_to_doc",
    "job_update_set",
    "lease_as_read",
    "lease_filter",
    "lease_from_doc",
    "lease_to_doc",
    "notification_from_doc",
    "notification_to_doc",
    "notify_from_doc",
    "notify_to_doc",
    "outbox_update",
    "output_from_doc",
    "output_set",
    "revision_doc_id",
    "revision_from_doc",
    "revision_to_doc",
    "run_filter_query",
    "run_from_doc",
    "run_to_doc",
    "stored_response_to_doc",
    "window_from_doc",
    "window_to_doc",
]
