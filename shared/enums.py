"""Every named value of cronhive's domain, once: statuses, triggers, policies, scopes
and error types.

Each is a `StrEnum`, so a member *is* its string: it compares equal to the stored
text, pymongo stores it as a plain BSON string, JSON shows it as text and logs
print its value. No other module spells one of these values as a literal; the
store edge turns stored strings back into members (an unknown string raises
`ValueError` there).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is in its life (SPEC §4).

    ``pending``: created, the publish not yet confirmed by RabbitMQ (re-published
    if never confirmed); ``queued`` only after the broker's confirm (or again while
    a retry waits out its backoff); ``running`` while an attempt holds the lease.
    The other six are final: a final run never runs again (``cancelled``: stopped or
    withdrawn by ``POST /runs/:run_id/cancel``).
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_RUN_STATUSES

    @property
    def started(self) -> bool:
        """False for ``pending`` and ``queued``: no attempt of the run is under way."""
        return self not in NOT_STARTED


FINAL_RUN_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.SKIPPED,
                                RunStatus.ABANDONED, RunStatus.CANCELLED})
#: Both mean "not started": a start must not lose to the scheduler's pending → queued mark.
NOT_STARTED = (RunStatus.PENDING, RunStatus.QUEUED)


class Trigger(StrEnum):
    """Why a run exists: a slot of the job's schedule, a manual trigger, or a past slot
    run again by a backfill (``POST /jobs/:id/backfill``)."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    BACKFILL = "backfill"


class Reprocess(StrEnum):
    """Which slots of its range a backfill runs: those with no ``succeeded`` run
    (``missing``, the default), those whose runs failed (``failed``), or every one."""

    MISSING = "missing"
    FAILED = "failed"
    ALL = "all"


class MisfirePolicy(StrEnum):
    """What missed slots become (see `cronhive.slots`)."""

    FIRE_ONCE = "fire_once"
    SKIP = "skip"
    FIRE_ALL = "fire_all"


class OverlapPolicy(StrEnum):
    """Whether a run may start while another run of the job holds its lease (see
    `cronhive.scheduler.overlap`)."""

    FORBID = "forbid"
    ALLOW = "allow"
    BUFFER_ONE = "buffer_one"

    @property
    def uses_job_lease(self) -> bool:
        """``forbid`` and ``buffer_one`` runs hold the job's lease; ``allow`` runs their own."""
        return self != OverlapPolicy.ALLOW


class JobStatus(StrEnum):
    """What a job is: ``active`` (enabled), ``disabled``, ``invalid`` — its stored
    document cannot be a job (a field missing, of the wrong type, an unparsable
    schedule or time zone: see the job's ``invalid_reason``; it never fires, a full
    ``PUT`` repairs it) — or ``completed``: enabled, but its bounded schedule
    (``end_at``, ``max_fires``) has no slot left; manual triggers and backfills
    still run it."""

    ACTIVE = "active"
    DISABLED = "disabled"
    INVALID = "invalid"
    COMPLETED = "completed"
    #: shown (never stored) while an open maintenance window names the enabled job
    PAUSED = "paused"


class LeaseScope(StrEnum):
    """Where a lease lives: on the job (``forbid``/``buffer_one`` runs), on the run
    itself (``allow`` runs), or a named document of ``leases`` (the scheduler's
    leader lease, the workers' reaper). ``job`` and ``run`` are stored in a run's
    ``lease_scope``."""

    JOB = "job"
    RUN = "run"
    NAMED = "named"


class ErrorType(StrEnum):
    """The ``error.type`` cronhive itself records (a failed handler's is its
    exception's class name instead)."""

    MISFIRE = "misfire"
    OVERLAP = "overlap"
    TIMEOUT = "timeout"
    LEASE_LOST = "lease_lost"
    LEASE_EXPIRED = "lease_expired"
    ABANDONED = "abandoned"
    JOB_NOT_FOUND = "job_not_found"
    JOB_DELETED = "job_deleted"
    MAINTENANCE = "maintenance"
    CANCELLED = "cancelled"
    #: no live worker (of the run's queue) has the job's handler registered
    HANDLER_NOT_FOUND = "handler_not_found"
    #: the job's stored document is not a valid job (see its ``invalid_reason``)
    INVALID_JOB = "invalid_job"
    #: the built-in ``http`` handler (`cronhive.http_calls`)
    HTTP_ERROR = "http_error"
    UNEXPECTED_STATUS = "unexpected_status"
    DESTINATION_NOT_ALLOWED = "destination_not_allowed"
    MISSING_SECRET = "missing_secret"
    HTTP_TRANSPORT_ERROR = "http_transport_error"


class NotifyEvent(StrEnum):
    """What a job's ``notify`` can be told about (README, "Notifications")."""

    FAILURE = "failure"
    RECOVERY = "recovery"
    SKIPPED = "skipped"


class DeliveryStatus(StrEnum):
    """Where one notification's delivery is: still being tried, delivered, or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class RevisionAction(StrEnum):
    """What a job revision records (`cronhive.revisions`): a definition change."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    PAUSE = "pause"
    RESUME = "resume"


class TokenRole(StrEnum):
    """What an API token may do: ``admin`` reads and writes, ``read`` only reads."""

    ADMIN = "admin"
    READ = "read"


class ReadAccess(StrEnum):
    """``API_READS``: whether reading needs a token."""

    PUBLIC = "public"
    TOKEN = "token"


class SchedulerRole(StrEnum):
    """A scheduler process's role in its heartbeat."""

    LEADER = "leader"
    STANDBY = "standby"


__all__ = [
    "FINAL_RUN_STATUSES",
    "NOT_STARTED",
    "DeliveryStatus",
    "ErrorType",
    "JobStatus",
    "LeaseScope",
    "MisfirePolicy",
    "NotifyEvent",
    "OverlapPolicy",
    "ReadAccess",
    "Reprocess",
    "RevisionAction",
    "RunStatus",
    "SchedulerRole",
    "TokenRole",
    "Trigger",
]
