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
* Enumerations are stored as their plain strings (`StrEnum`); an unknown string
  raises `ValueError` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cronhive.domain import (
    DEFAULT_POLICIES,
    DEFAULT_TIMEZONE,
    AttemptEnd,
    AttemptRecord,
    AttemptStart,
    Heartbeat,
    Job,
    Run,
    RunError,
    RunFilter,
    Stored,
)
from cronhive.enums import JobStatus, LeaseScope, MisfirePolicy, OverlapPolicy, RunStatus, Trigger
from cronhive.leases import Lease
from cronhive.slots import JobAdvance

Document = dict[str, Any]

LEASE_FIELD = "lease"
TERM_FIELD = "lease_term"

#: A job document's keys in the order `MongoStore.create_job` writes them.
JOB_KEYS = (
    "_id", "name", "schedule", "timezone", "handler", "args", "enabled", "misfire_policy", "misfire_grace_s",
    "overlap_policy", "jitter_s", "timeout_s", "max_retries", "created_at", "updated_at", "revision",
    "next_fire_at", "due_at", "last_triggered_at", "last_run_id", "last_run_status", "last_run_duration_ms",
    "lease", "lease_term", "disabled_reason", "buffered_run_id",
)
#: Job fields written only once set (a job without them has none of these keys).
JOB_LATER_KEYS = ("start_at", "end_at", "max_fires", "fires")
#: What a job field absent from its document reads as (any field not listed: None).
JOB_ABSENT: dict[str, Any] = {"timezone": DEFAULT_TIMEZONE, "args": {}, "enabled": False, "name": "",
                              "fires": 0, **DEFAULT_POLICIES}

#: A run document's keys as first written (`new_run`); the rest follow as first set.
RUN_KEYS = (
    "_id", "job_id", "trigger", "scheduled_for", "status", "attempt", "lease_token", "worker", "created_at",
    "queued_at", "started_at", "finished_at", "duration_ms", "lateness_ms", "error",
)
RUN_LATER_KEYS = ("sched_term", "lease_term", "lease", "lease_holder", "lease_scope", "retry_at", "attempts",
                  "cancel_requested")
RUN_ABSENT: dict[str, Any] = {"attempt": 0, "attempts": [], "cancel_requested": False}


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

_JOB_KNOWN = frozenset(JOB_KEYS + JOB_LATER_KEYS)


def _policy(doc: Mapping[str, Any], key: str) -> Any:
    value = doc.get(key)
    return DEFAULT_POLICIES[key] if value is None else value


def job_from_doc(doc: Mapping[str, Any]) -> Job:
    """The job a ``jobs`` document holds (see the module docstring for absent fields).
    A projection without ``name``/``args`` (planning reads none) gives them empty."""
    job_id = doc["_id"]
    last_status = doc.get("last_run_status")
    return Job(
        job_id=job_id,
        name=doc.get("name", ""),
        schedule=doc["schedule"],
        handler=doc["handler"],
        timezone=doc.get("timezone", DEFAULT_TIMEZONE),
        args=doc.get("args") or {},
        enabled=bool(doc.get("enabled")),
        misfire_policy=MisfirePolicy(_policy(doc, "misfire_policy")),
        misfire_grace_s=_policy(doc, "misfire_grace_s"),
        overlap_policy=OverlapPolicy(_policy(doc, "overlap_policy")),
        jitter_s=_policy(doc, "jitter_s"),
        timeout_s=doc.get("timeout_s", DEFAULT_POLICIES["timeout_s"]),
        max_retries=_policy(doc, "max_retries"),
        created_at=doc.get("created_at"),
        updated_at=doc.get("updated_at"),
        revision=doc.get("revision"),
        next_fire_at=doc.get("next_fire_at"),
        due_at=doc.get("due_at"),
        last_triggered_at=doc.get("last_triggered_at"),
        last_run_id=doc.get("last_run_id"),
        last_run_status=RunStatus(last_status) if last_status is not None else None,
        last_run_duration_ms=doc.get("last_run_duration_ms"),
        lease=_lease_or_none(LeaseScope.JOB, job_id, doc.get(LEASE_FIELD)),
        lease_term=doc.get(TERM_FIELD),
        disabled_reason=doc.get("disabled_reason"),
        buffered_run_id=doc.get("buffered_run_id"),
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

_RUN_KNOWN = frozenset(RUN_KEYS + RUN_LATER_KEYS)


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
    return fields


def heartbeat_set(beat: Heartbeat) -> Document:
    return {"role": beat.role, "term": beat.term, "host": beat.host, "pid": beat.pid}


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
    "job_from_doc",
    "job_status_filter",
    "job_to_doc",
    "lease_as_read",
    "lease_filter",
    "lease_from_doc",
    "lease_to_doc",
    "run_filter_query",
    "run_from_doc",
    "run_to_doc",
]
