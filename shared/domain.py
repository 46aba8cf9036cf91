"""The job and run model: typed values, their defaults and schedule math, ids, time
formatting and the API's views of them.

A `Job` is one document of the collection ``jobs`` (``_id`` = ``job_id``): the
definition, the scheduling state (``next_fire_at``: the next slot instant by the
cron rules; ``due_at``: that slot plus the job's jitter, None while disabled or
completed — the scheduler's index), its bounds (``start_at``, ``end_at``,
``max_fires`` and the ``fires`` counted under it), the outcome of the last run and
the job's run lease. A `Run` is one document of ``runs`` (``_id`` = ``run_id``): one
per slot (unique on ``job_id`` + ``scheduled_for`` for scheduled runs, and again for
backfill runs), or per manual trigger.

Invariants:

* Values are immutable; a change is a new value (`dataclasses.replace`) or a
  store write.
* Conversion to and from MongoDB documents happens only in the store edge
  (`cronhive.store.documents`). A value read from the store remembers the
  document's layout (`Stored`: key order, which fields were absent, fields this
  version does not know), so writing it back reproduces the document byte for
  byte; the domain never reads that layout.
* A field absent from an old document reads as its default here: the time zone
  UTC, the policies `DEFAULT_POLICIES`, ``args`` ``{}``. A stored null time zone
  stays None (the API shows it as stored) and is computed as UTC (`Job.zone`), by
  every piece of schedule math alike.
* Schedule math (next slot + jitter, what an update does to the slot) lives
  here and in `cronhive.slots`, never in the store.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cronhive import cron
from cronhive.enums import FINAL_RUN_STATUSES as FINAL_RUN_STATUSES
from cronhive.enums import (
    DeliveryStatus,
    JobStatus,
    LeaseScope,
    MisfirePolicy,
    NotifyEvent,
    OverlapPolicy,
    Reprocess,
    RunStatus,
    SchedulerRole,
    Trigger,
)
from cronhive.errors import ValidationError
from cronhive.leases import Lease, host_and_pid, pid_of

UTC = UTC

JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
JOB_ID_RE = re.compile(JOB_ID_PATTERN)

#: The accepted values, as plain strings (for validation and the OpenAPI document).
MISFIRE_POLICIES = tuple(member.value for member in MisfirePolicy)
OVERLAP_POLICIES = tuple(member.value for member in OverlapPolicy)
JOB_STATUSES = tuple(member.value for member in JobStatus)
#: What ``GET /jobs?status=`` filters on: the ``enabled`` flag (an invalid job is
#: listed under its flag, with ``status: "invalid"``) and ``paused`` (computed from
#: the open maintenance windows; ``active`` then leaves those jobs out).
JOB_STATUS_FILTERS = (JobStatus.ACTIVE.value, JobStatus.DISABLED.value, JobStatus.COMPLETED.value,
                      JobStatus.PAUSED.value)
#: The dashboard's status filter (no maintenance windows read).
JOB_FLAG_STATUSES = (JobStatus.ACTIVE.value, JobStatus.DISABLED.value, JobStatus.COMPLETED.value)
TAG_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
TAG_RE = re.compile(TAG_PATTERN)
MAX_TAGS = 20
RUN_STATUSES = tuple(member.value for member in RunStatus)
TRIGGERS = tuple(member.value for member in Trigger)
REPROCESS_CHOICES = tuple(member.value for member in Reprocess)

DEFAULT_TIMEZONE = "UTC"
DEFAULT_POLICIES: dict[str, Any] = {
    "misfire_policy": MisfirePolicy.FIRE_ONCE,
    "misfire_grace_s": 60,
    "overlap_policy": OverlapPolicy.FORBID,
    "jitter_s": 0,
    "timeout_s": 3600,
    "max_retries": 0,
}
MAX_FIRE_ALL = 100
#: The bounds of each integer policy (as the API validates them): a stored value outside
#: them makes the job invalid.
WEEK_S = 7 * 86400
POLICY_RANGES: dict[str, tuple[int, int]] = {
    "misfire_grace_s": (0, WEEK_S),
    "jitter_s": (0, 3600),
    "timeout_s": (1, WEEK_S),
    "max_retries": (0, 20),
}
#: Most slots one backfill request may cover.
MAX_BACKFILL_SLOTS = 1000
#: A slot at ``start_at`` is in bounds: the search for it starts this much before.
_JUST_BEFORE = timedelta(microseconds=1)


def whole_ms(instant: datetime) -> datetime:
    """``instant`` to whole milliseconds, as MongoDB stores it (so a value compared with
    what was stored compares equal)."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def utcnow() -> datetime:
    """The current instant, whole milliseconds (what MongoDB stores)."""
    return whole_ms(datetime.now(UTC))


def format_instant(value: datetime | None) -> str | None:
    """UTC ISO-8601 with ``Z`` and whole seconds: ``2026-03-26T08:00:00Z``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slugify(name: str) -> str:
    """A job-id-safe slug of a display name, ``[a-z0-9_]+``: transliterated to ASCII
    by python-slugify (``Daily Reminder Check`` → ``daily_reminder_check``,
    ``Отчёт за день`` → ``otchet_za_den``, ``日本語`` → ``ri_ben_yu``), every run of
    anything else one ``_``. A name with nothing to transliterate (``🎉``, ``!!!``)
    gives 8 hex digits of the SHA-256 of its NFC form, so distinct names still get
    distinct ids (never one shared fallback word)."""
    from slugify import slugify as transliterate

    slug = transliterate(name, separator="_", entities=False, decimal=False, hexadecimal=False)
    slug = re.sub(r"[^a-z0-9]+", "_", slug).strip("_")
    if slug:
        return slug
    return hashlib.sha256(unicodedata.normalize("NFC", name).encode("utf-8", "surrogatepass")).hexdigest()[:8]


def job_id_for_name(name: str, attempt: int = 0) -> str:
    """``job_`` + slug of the name; a numeric suffix from the second attempt on."""
    suffix = "" if attempt == 0 else f"_{attempt + 1}"
    base = ("job_" + slugify(name))[: 64 - len(suffix)].rstrip("_-")
    return base + suffix


def new_run_id(at: datetime) -> str:
    """``run_YYYYMMDD_HHMMSS_<random>``: the UTC instant plus a unique suffix."""
    return f"run_{at.astimezone(UTC).strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(4)}"


def jitter_offset(job_id: str, jitter_s: int) -> timedelta:
    """A deterministic per-job offset in [0, jitter_s) seconds (ms resolution)."""
    if jitter_s <= 0:
        return timedelta(0)
    digest = hashlib.sha256(job_id.encode()).digest()
    millis = int.from_bytes(digest[:8], "big") % (jitter_s * 1000)
    return timedelta(milliseconds=millis)


# -- values -----------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """How a document was laid out when it was read: its keys in order, and the
    values of fields this version does not model. Only the store edge reads it."""

    keys: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunError:
    """Why a run did not succeed: ``type`` is an `ErrorType` or, for a failed
    handler, its exception's class name; ``message`` is bounded by the worker."""

    type: str
    message: str
    #: where a handler failed: its last frames, bounded (None for other errors)
    traceback: str | None = None

    def view(self) -> dict[str, str | None]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True)
class AttemptRecord:
    """One entry of a run's ``attempts`` history (at most the latest 50 are kept)."""

    attempt: int
    worker: str | None
    status: RunStatus
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    error: RunError | None


@dataclass(frozen=True)
class Notify:
    """A job's ``notify``: where to POST which events (README, "Notifications").
    Header values may name worker secrets as ``${secret:NAME}``."""

    url: str
    on: tuple[NotifyEvent, ...]
    headers: dict[str, str] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"url": self.url, "on": [str(event) for event in self.on], "headers": dict(self.headers)}


@dataclass(frozen=True)
class Notification:
    """One notification of a run and its delivery: the event, the destination as it
    was when the event happened, and how delivering it went (at least once: retried
    with backoff until delivered or `DeliveryStatus.FAILED` after the last attempt)."""

    event: NotifyEvent
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    job_name: str | None = None
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    created_at: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    response_status: int | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        """As ``GET /runs/:run_id`` shows it (headers are not shown: they may carry credentials)."""
        return {
            "event": self.event,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "last_attempt_at": format_instant(self.last_attempt_at),
            "delivered_at": format_instant(self.delivered_at),
            "response_status": self.response_status,
            "error": self.error,
        }


#: A run's ``output`` (its JSON form) and ``log`` keep at most this many bytes.
MAX_OUTPUT_BYTES = 64 * 1024
MAX_LOG_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunOutput:
    """What an attempt leaves on its run: the handler's return value as JSON (``output``,
    None when it returned nothing), whether it was cut to `MAX_OUTPUT_BYTES`, and the
    last `MAX_LOG_BYTES` of the lines it logged through ``ctx.logger`` (None: none)."""

    output: Any = None
    truncated: bool = False
    log: str | None = None


@dataclass(frozen=True)
class Job:
    """A job: its definition, scheduling state, last outcome and run lease.

    ``revision`` grows with every API change and scheduler disable (the
    compare-and-set of updates); ``lease_term`` is the lease's fencing counter
    (None: the document never had one). ``lease`` is the run lease as stored — it
    may have expired (`lock_acquired`).
    """

    job_id: str
    name: str
    schedule: str
    handler: str
    timezone: str | None = DEFAULT_TIMEZONE
    args: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    misfire_grace_s: int = 60
    overlap_policy: OverlapPolicy = OverlapPolicy.FORBID
    jitter_s: int = 0
    timeout_s: int | None = 3600
    max_retries: int = 0
    tags: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    revision: int | None = 1
    next_fire_at: datetime | None = None
    due_at: datetime | None = None
    last_triggered_at: datetime | None = None
    last_run_id: str | None = None
    last_run_status: RunStatus | None = None
    last_run_duration_ms: int | None = None
    lease: Lease | None = None
    lease_term: int | None = 0
    disabled_reason: str | None = None
    buffered_run_id: str | None = None
    notify: Notify | None = None
    #: Why the stored document is not a valid job (which field, and why), or None.
    #: The store edge decodes such a document anyway (each bad field as its
    #: default, a bad ``name``/``schedule``/``handler`` as ""): it is shown with
    #: status ``invalid``, never planned or run, and repaired by a full ``PUT``.
    invalid_reason: str | None = None
    #: The fields that make it invalid (a repairing ``PUT`` must give each of them).
    invalid_fields: tuple[str, ...] = ()
    #: Which creation of this ``job_id`` it is (random, set at create; None for a job an
    #: older version created). Its runs carry it (`Run.job_incarnation`): a run of a
    #: deleted job never touches a job re-created with the same id.
    incarnation: str | None = None
    #: bounds of the schedule: no slot before ``start_at`` or at/after ``end_at``, at most ``max_fires`` fired
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_fires: int | None = None
    #: scheduled runs fired while ``max_fires`` was set (counted by the scheduler's advance write)
    fires: int = 0
    stored: Stored | None = field(default=None, compare=False, repr=False)

    @property
    def status(self) -> JobStatus:
        if self.invalid_reason is not None:
            return JobStatus.INVALID
        if not self.enabled:
            return JobStatus.DISABLED
        return JobStatus.COMPLETED if self.completed else JobStatus.ACTIVE

    @property
    def bounded(self) -> bool:
        """It has an ``end_at`` or a ``max_fires``: its schedule can run out."""
        return self.end_at is not None or self.max_fires is not None

    @property
    def completed(self) -> bool:
        """Enabled, bounded, and no slot left: never due again (until a PUT extends the bounds)."""
        return self.enabled and self.bounded and self.due_at is None

    @property
    def fires_left(self) -> int | None:
        """Scheduled fires left under ``max_fires`` (None: unbounded)."""
        return None if self.max_fires is None else max(0, self.max_fires - self.fires)

    def in_bounds(self, slot: datetime) -> bool:
        """``slot`` is within ``[start_at, end_at)``."""
        return (self.start_at is None or slot >= self.start_at) and (self.end_at is None or slot < self.end_at)

    @property
    def queues_slots(self) -> bool:
        """``fire_all`` under ``forbid``: every slot runs, one after another, oldest first —
        a slot that finds the job's lease held waits for it instead of being skipped
        (at most `MAX_FIRE_ALL` waiting)."""
        return self.misfire_policy == MisfirePolicy.FIRE_ALL and self.overlap_policy == OverlapPolicy.FORBID

    @property
    def zone(self) -> str:
        """The time zone its slots are computed in: a stored null is UTC."""
        return self.timezone or DEFAULT_TIMEZONE

    @property
    def jitter(self) -> timedelta:
        """Its deterministic offset in ``[0, jitter_s)`` (see `jitter_offset`)."""
        return jitter_offset(self.job_id, int(self.jitter_s))

    def lock_acquired(self, now: datetime) -> bool:
        """A run holds the job's lease at ``now`` (a live lease, not an expired one)."""
        return self.lease is not None and self.lease.live(now)

    def next_slot(self, after: datetime) -> tuple[datetime, datetime]:
        """``(next_fire_at, due_at)``: its first slot strictly after ``after``, and that
        slot plus its jitter. Raises `InvalidSchedule` for an uncomputable schedule."""
        next_fire = cron.next_fire(self.schedule, self.zone, after)
        return next_fire, next_fire + self.jitter

    def next_bounded_slot(self, after: datetime) -> tuple[datetime, datetime] | tuple[None, None]:
        """`next_slot` within the bounds: the first slot strictly after ``after`` and not
        before ``start_at``; ``(None, None)`` when it is at/after ``end_at`` or no fire is
        left under ``max_fires``."""
        if self.fires_left == 0:
            return None, None
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - _JUST_BEFORE
        next_fire, due_at = self.next_slot(after)
        if self.end_at is not None and next_fire >= self.end_at:
            return None, None
        return next_fire, due_at

    def schedule_state(self, after: datetime) -> dict[str, datetime | None]:
        """The scheduling fields of this job computed from ``after``: the next slot (within
        the bounds) and ``due_at`` when enabled; a disabled or completed job is never due."""
        if not self.enabled:
            return {"due_at": None}
        next_fire, due_at = self.next_bounded_slot(after)
        return {"next_fire_at": next_fire, "due_at": due_at}


@dataclass(frozen=True)
class Run:
    """One run of a job: a slot's (``trigger`` schedule) or a manual trigger's.

    ``attempt`` counts the attempts started (0 until the first). The fields of
    the current attempt — ``lease_token`` (the fencing token of the lease it
    holds, or the one reserved for it), ``lease_holder``, ``lease_scope`` and
    ``worker`` — fence every write about it. ``lease`` / ``lease_term`` are the
    run's own lease (``allow`` jobs only). ``sched_term`` is the term of the
    leader that wrote a slot run.
    """

    run_id: str
    job_id: str
    trigger: Trigger
    status: RunStatus
    scheduled_for: datetime | None = None
    attempt: int = 0
    lease_token: int | None = None
    worker: str | None = None
    created_at: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    lateness_ms: int | None = None
    error: RunError | None = None
    sched_term: int | None = None
    lease_term: int | None = None
    lease: Lease | None = None
    lease_holder: str | None = None
    lease_scope: LeaseScope | None = None
    retry_at: datetime | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    output: RunOutput = field(default_factory=RunOutput)
    notifications: tuple[Notification, ...] = ()
    #: when the deliverer should next look at its pending notifications (None: none pending)
    notify_due: datetime | None = None
    #: `Job.incarnation` of the job it was created for
    job_incarnation: str | None = None
    #: the job's `Job.revision` when the run was created, while the job is unchanged since
    #: (a job change sets it to None for runs not started): a worker starting from the
    #: job's snapshot in the message trusts the snapshot only while it still matches
    job_revision: int | None = None
    #: `AttemptStart.attempt_id` of the current attempt
    attempt_id: str | None = None
    #: the slots ``[covers_from, covers_until)`` without a run of their own that this run
    #: stands for: coalesced into it (``fire_once`` catch-up) or skipped with it
    covers_from: datetime | None = None
    covers_until: datetime | None = None
    #: ``POST /runs/:run_id/cancel`` asked its running attempt to stop
    cancel_requested: bool = False
    stored: Stored | None = field(default=None, compare=False, repr=False)

    @property
    def scheduled(self) -> bool:
        return self.trigger == Trigger.SCHEDULE

    def belongs_to(self, job: Job | None) -> bool:
        """``job`` is the very job this run was created for, not another one re-created
        with the same id after that one was deleted."""
        return job is not None and job.job_id == self.job_id and job.incarnation == self.job_incarnation

    def attempt_lease_doc_id(self) -> str:
        """The id of the document the current attempt's lease lives on."""
        return self.run_id if self.lease_scope == LeaseScope.RUN else self.job_id

    def attempt_lease(self) -> Lease | None:
        """The lease the current attempt was given (its holder and token; the expiry
        is unknown here), to release it if it is still in place."""
        if self.lease_holder is None or self.lease_token is None:
            return None
        scope = LeaseScope.RUN if self.lease_scope == LeaseScope.RUN else LeaseScope.JOB
        return Lease(scope, self.attempt_lease_doc_id(), self.lease_holder, int(self.lease_token), datetime.min,
                     self.run_id)


@dataclass(frozen=True)
class RunFilter:
    """What ``GET /runs`` selects: each given field narrows (``since`` inclusive,
    ``until`` exclusive, both on ``created_at``)."""

    status: RunStatus | None = None
    trigger: Trigger | None = None
    job_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class AttemptStart:
    """What marks a run ``running`` for attempt ``number``: the lease it holds (its
    token fences every later write of the attempt), the worker process, when it
    started and how late that was after the run's slot."""

    number: int
    lease: Lease
    worker: str
    started_at: datetime
    lateness_ms: int | None
    #: this start's own id, written with it: the proof that it was *this* start that
    #: applied (a first attempt holds its run's reservation, whose holder and token every
    #: delivery of the run shares)
    attempt_id: str = field(default_factory=lambda: secrets.token_hex(8))


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, as written on the run.

    A final ``status`` writes ``finished_at``; ``queued`` (a retry waiting out its
    backoff until ``retry_at``) does not. ``duration_ms`` None: unknown (a dead
    attempt's), left as it was. ``releases_run_lease``: the run's own lease
    (``allow``) is freed in the same write.
    """

    status: RunStatus
    error: RunError | None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    retry_at: datetime | None = None
    releases_run_lease: bool = False
    #: the attempt's output and log (written in the same update)
    output: RunOutput | None = None
    #: notifications the outcome raises (the run is their outbox: written in the same update)
    notifications: tuple[Notification, ...] = ()


@dataclass(frozen=True)
class AttemptFinish:
    """The end of attempt ``attempt`` of run ``run_id`` as one fenced write: ``end`` on
    the run and ``record`` in its history, only while the run still belongs to that
    attempt (``running``, same number, lease ``token``)."""

    run_id: str
    attempt: int
    token: int | None
    end: AttemptEnd
    record: AttemptRecord


@dataclass(frozen=True)
class JobOutcome:
    """A run's outcome on its job (``last_run_*``), on the job's ``incarnation`` only;
    under ``lease`` (a job lease the attempt held) released in the same write."""

    job_id: str
    run_id: str
    status: RunStatus
    duration_ms: int | None
    lease: Lease | None
    incarnation: str | None


@dataclass(frozen=True)
class Heartbeat:
    """A scheduler process's heartbeat: its holder name (``hostname:pid``), role and
    the term it holds as leader (None as standby)."""

    holder: str
    role: SchedulerRole
    term: int | None

    @property
    def host(self) -> str:
        return host_and_pid(self.holder)[0]

    @property
    def pid(self) -> int | None:
        return host_and_pid(self.holder)[1]


def new_job(job_id: str, fields: Mapping[str, Any], now: datetime) -> Job:
    """The job an API create makes of its validated ``fields`` at ``now``: the given
    values, the defaults for the rest, and its first slot when enabled (a job created
    disabled gets its slot when enabled)."""
    policy = {key: fields.get(key, default) for key, default in DEFAULT_POLICIES.items()}
    job = Job(
        job_id=job_id,
        name=fields["name"],
        schedule=fields["schedule"],
        handler=fields["handler"],
        timezone=fields.get("timezone") or DEFAULT_TIMEZONE,
        args=fields.get("args") or {},
        enabled=fields.get("enabled", True),
        misfire_policy=MisfirePolicy(policy["misfire_policy"]),
        misfire_grace_s=policy["misfire_grace_s"],
        overlap_policy=OverlapPolicy(policy["overlap_policy"]),
        jitter_s=policy["jitter_s"],
        timeout_s=policy["timeout_s"],
        max_retries=policy["max_retries"],
        tags=tuple(fields.get("tags") or ()),
        created_at=now,
        updated_at=now,
        notify=fields.get("notify"),
        incarnation=secrets.token_hex(8),
        start_at=fields.get("start_at"),
        end_at=fields.get("end_at"),
        max_fires=fields.get("max_fires"),
    )
    if not job.enabled:
        return job  # it gets its first slot when enabled
    next_fire, due_at = job.next_bounded_slot(now)
    return replace(job, next_fire_at=next_fire, due_at=due_at)


#: A changed one of these moves the job's next slot.
TIMING_FIELDS = ("schedule", "timezone", "jitter_s", "start_at", "end_at", "max_fires")


def job_update(current: Job, changes: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The fields an API update of ``current`` with the validated ``changes`` sets at ``now``.

    A changed schedule, time zone or jitter takes effect from the next slot after
    ``now``. Disabling clears ``due_at`` but keeps ``next_fire_at``, so re-enabling
    lets the scheduler apply the misfire policy to what was missed; re-enabling
    makes the slot it was waiting for due again (``disabled_reason`` cleared).
    """
    if current.invalid_reason is not None:
        _check_repair(current, changes)
    update: dict[str, Any] = {**changes, "updated_at": now}
    if current.invalid_reason is not None:
        update["disabled_reason"] = None  # repaired: the reason it was disabled for is gone
    if current.max_fires is None and changes.get("max_fires") is not None:
        update["fires"] = 0  # max_fires counts the fires from when it is set
    typed: dict[str, Any] = {key: tuple(value) if key == "tags" else value for key, value in update.items()
                             if key != "updated_at"}
    merged = replace(current, **typed, invalid_reason=None, invalid_fields=())
    timing_changed = any(key in changes and changes[key] != getattr(current, key) for key in TIMING_FIELDS)
    if not merged.enabled:
        update["due_at"] = None
        if timing_changed:
            # the old schedule's slot means nothing now; re-enabling waits for the new one
            update["next_fire_at"] = merged.next_bounded_slot(now)[0]
    elif timing_changed or current.next_fire_at is None:
        update.update(merged.schedule_state(now))
        update["disabled_reason"] = None
    elif not current.enabled:
        assert current.next_fire_at is not None  # handled above
        update["due_at"] = current.next_fire_at + merged.jitter
        update["disabled_reason"] = None
    return update


def _check_repair(current: Job, changes: Mapping[str, Any]) -> None:
    """An update of an invalid job must give a valid value for each field that makes it
    invalid (the schema validated what it gives): the job is valid after it. Else
    `ValidationError` (422) naming each field still missing."""
    missing = [name for name in current.invalid_fields if name not in changes]
    if missing:
        raise ValidationError(
            f"job {current.job_id!r} is invalid ({current.invalid_reason}); a PUT that repairs it must set "
            + ", ".join(missing),
            details={name: ["The stored value is invalid: set it in this PUT to repair the job."]
                     for name in missing})


@dataclass(frozen=True)
class WaitingSlot:
    """A schedule run not started yet, as the reaper looks for stalled queues of slots
    (`cronhive.store.runs.RunStore.waiting_slot_queues`)."""

    run_id: str
    slot: datetime
    created_at: datetime


def new_run(job: Job, run_id: str, trigger: Trigger, scheduled_for: datetime, now: datetime,
            lease: Lease | None, status: RunStatus = RunStatus.PENDING) -> Run:
    """A run as first written: not started, reserving ``lease``'s token when given."""
    return Run(run_id=run_id, job_id=job.job_id, trigger=trigger, scheduled_for=scheduled_for, status=status,
               lease_token=lease.token if lease else None, created_at=now, job_incarnation=job.incarnation,
               job_revision=job.revision)


@dataclass(frozen=True)
class SchedulerStatus:
    """Who leads the schedulers at one instant: the live leader lease's holder
    (``hostname:pid``; None while none is live), its term (the stored ``lease_term``
    while none is live) and expiry, and the live standbys (heartbeats not expired)."""

    holder: str | None
    pid: int | None
    term: int | None
    lease_expires_at: datetime | None
    standbys: tuple[str, ...]

    @classmethod
    def at(cls, lease: Lease | None, lease_term: int | None, live_heartbeats: list[str],
           now: datetime) -> SchedulerStatus:
        live = lease is not None and lease.live(now)
        holder = lease.holder if live and lease is not None else None
        return cls(
            holder=holder,
            pid=pid_of(holder),
            term=lease.token if live and lease is not None else lease_term,
            lease_expires_at=lease.expires_at if live and lease is not None else None,
            standbys=tuple(sorted(name for name in live_heartbeats if name != holder)),
        )

    def view(self) -> dict[str, Any]:
        """As ``GET /scheduler`` shows it."""
        return {
            "holder": self.holder,
            "pid": self.pid,
            "term": self.term,
            "lease_expires_at": format_instant(self.lease_expires_at),
            "standbys": list(self.standbys),
        }


# -- views --------------------------------------------------------------------------


def job_view(job: Job, now: datetime, paused_until: datetime | None = None) -> dict[str, Any]:
    """The job detail the API shows (SPEC §3): every field present, null when unset.
    ``paused_until``: the end of the open maintenance window that names the job
    (`cronhive.windows.paused_until`): its status then shows ``paused``."""
    invalid = job.invalid_reason is not None
    status = JobStatus.PAUSED if job.enabled and not invalid and paused_until is not None else job.status
    return {
        "job_id": job.job_id,
        # an invalid job's missing (or non-text) name, schedule or handler shows as null
        "name": job.name or None if invalid else job.name,
        "schedule": job.schedule or None if invalid else job.schedule,
        "timezone": job.timezone,
        "handler": job.handler or None if invalid else job.handler,
        "args": job.args,
        "enabled": job.enabled,
        "status": status,
        "invalid_reason": job.invalid_reason,
        "lock_acquired": job.lock_acquired(now),
        "last_triggered_at": format_instant(job.last_triggered_at),
        "last_run_id": job.last_run_id,
        "last_run_status": job.last_run_status,
        "last_run_duration_ms": job.last_run_duration_ms,
        "next_trigger_at": format_instant(job.due_at) if job.enabled and not invalid else None,
        "created_at": format_instant(job.created_at),
        "updated_at": format_instant(job.updated_at),
        "disabled_reason": job.disabled_reason,
        "misfire_policy": job.misfire_policy,
        "misfire_grace_s": job.misfire_grace_s,
        "overlap_policy": job.overlap_policy,
        "jitter_s": job.jitter_s,
        "timeout_s": job.timeout_s,
        "max_retries": job.max_retries,
        "notify": job.notify.view() if job.notify else None,
        "tags": list(job.tags),
        "paused_until": format_instant(paused_until) if status == JobStatus.PAUSED else None,
        "start_at": format_instant(job.start_at),
        "end_at": format_instant(job.end_at),
        "max_fires": job.max_fires,
        "fires_left": job.fires_left,
    }


def run_view(run: Run) -> dict[str, Any]:
    """One run as the API shows it (SPEC §3)."""
    return {
        "run_id": run.run_id,
        "job_id": run.job_id,
        "trigger": run.trigger,
        "scheduled_for": format_instant(run.scheduled_for),
        "status": run.status,
        "attempt": run.attempt,
        "worker": run.worker,
        "created_at": format_instant(run.created_at),
        "queued_at": format_instant(run.queued_at),
        "started_at": format_instant(run.started_at),
        "finished_at": format_instant(run.finished_at),
        "duration_ms": run.duration_ms,
        "lateness_ms": run.lateness_ms,
        "error": run.error.view() if run.error else None,
        "retry_at": format_instant(run.retry_at) if run.status == RunStatus.QUEUED else None,
        "attempts": [attempt_view(record) for record in run.attempts],
        "output": run.output.output,
        "output_truncated": run.output.truncated,
        "log": run.output.log,
        "notifications": [notification.view() for notification in run.notifications],
        "cancel_requested": run.cancel_requested,
    }


#: What run lists (``GET /jobs/:id/runs``) leave out to stay light: the log (up to 64 KiB a
#: run) is shown by ``GET /runs/:run_id`` only.
RUN_LIST_OMITS = ("log",)


def run_summary_view(run: Run) -> dict[str, Any]:
    """A run as run lists show it: `run_view` without `RUN_LIST_OMITS`."""
    return {key: value for key, value in run_view(run).items() if key not in RUN_LIST_OMITS}


def attempt_view(record: AttemptRecord) -> dict[str, Any]:
    """One entry of a run's ``attempts`` history (each attempt's worker, start, end, outcome)."""
    return {
        "attempt": record.attempt,
        "worker": record.worker,
        "status": record.status,
        "started_at": format_instant(record.started_at),
        "finished_at": format_instant(record.finished_at),
        "duration_ms": record.duration_ms,
        "error": record.error.view() if record.error else None,
    }


def error_view(error: Any) -> Any:
    """A run's ``error`` as the API shows it: null, or ``{type, message, traceback, ...}``
    where ``traceback`` (the handler's last frames, when a handler raised) is null otherwise."""
    if not isinstance(error, dict):
        return error
    return {**error, "traceback": error.get("traceback")}


# -- notifications --------------------------------------------------------------------

#: Final statuses that are a failure for ``notify`` (``failure``, and ``recovery`` after one).
FAILURE_STATUSES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})


def outcome_event(status: RunStatus, previous: RunStatus | None) -> NotifyEvent | None:
    """The event a run's final ``status`` is, given the job's last recorded outcome before
    it (``previous``): ``failure`` (failed, timed out or abandoned: final, so no retry
    left), ``recovery`` (succeeded after a failure), ``skipped``, or None."""
    if status in FAILURE_STATUSES:
        return NotifyEvent.FAILURE
    if status == RunStatus.SUCCEEDED and previous in FAILURE_STATUSES:
        return NotifyEvent.RECOVERY
    if status == RunStatus.SKIPPED:
        return NotifyEvent.SKIPPED
    return None


def notifications_for(notify: Notify | None, event: NotifyEvent | None, job_name: str | None,
                      now: datetime) -> tuple[Notification, ...]:
    """The notification ``event`` raises for a job with ``notify`` (none when the job does
    not ask for that event)."""
    if notify is None or event is None or event not in notify.on:
        return ()
    return (Notification(event=event, url=notify.url, headers=dict(notify.headers), job_name=job_name or None,
                         created_at=now),)


def notification_payload(run: Run, notification: Notification, job_name: str | None) -> dict[str, Any]:
    """The JSON body POSTed for ``notification`` of ``run``."""
    return {
        "event": notification.event,
        "job_id": run.job_id,
        "job_name": job_name,
        "run_id": run.run_id,
        "status": run.status,
        "scheduled_for": format_instant(run.scheduled_for),
        "finished_at": format_instant(run.finished_at),
        "attempt": run.attempt,
        "error": run.error.view() if run.error else None,
    }
