"""The one exception hierarchy of cronhive.

The store and the domain raise these; the API maps them to HTTP in one place
(`api/errors.py`). Not-found errors subclass `LookupError`; transient
infrastructure failures are `Unavailable`, so retry code targets exactly them.
"""

from __future__ import annotations

from typing import Any


class CronhiveError(Exception):
    """Root of every error cronhive raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class ValidationError(CronhiveError, ValueError):
    """Input that is well-formed but not acceptable; `details` names each field."""

    code = "validation_error"


class InvalidSchedule(ValidationError):
    """A cron expression or time zone that cannot be parsed or never fires."""

    code = "invalid_schedule"


class NotFound(CronhiveError, LookupError):
    code = "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class Conflict(CronhiveError):
    code = "conflict"


class DuplicateJob(Conflict):
    code = "duplicate_job"


class PreconditionFailed(CronhiveError):
    """A conditional write (``If-Match``) whose condition no longer holds: the job
    is not at the revision the client saw (412 in the API)."""

    code = "precondition_failed"


class JobInvalid(Conflict):
    """The job's stored document is not a valid job (`Job.invalid_reason`): it cannot
    run until a ``PUT`` repairs it."""

    code = "job_invalid"


class RunFinished(Conflict):
    """The run already ended: it cannot be cancelled."""

    code = "run_finished"


class LeaseHeld(Conflict):
    """The job's lease is held by another run, so this run may not start now."""

    code = "lease_held"


class LeaseLost(CronhiveError):
    """A write under a lease found the lease no longer ours (expired, taken over)."""

    code = "lease_lost"


class Unavailable(CronhiveError):
    """A dependency (MongoDB, RabbitMQ) cannot be reached right now; retry later."""

    code = "service_unavailable"


class StoreUnavailable(Unavailable):
    code = "mongodb_unavailable"


class BrokerUnavailable(Unavailable):
    code = "rabbitmq_unavailable"


class ConfigurationError(CronhiveError):
    """Settings that cannot work (bad URL, bad number): the process refuses to start."""

    code = "configuration_error"
