"""One attempt at executing a run: who runs it, under which lease, and how it ended.

An attempt is created by `worker.middleware.RunLifecycle` once it holds the
lease and has marked the run ``running``; the actor reads it back through
`current_attempt` (one per worker thread), and `worker.keeper.LeaseKeeper`
renews its lease while the handler runs.
"""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from dramatiq.middleware import Interrupt, TimeLimitExceeded

from cronhive.domain import Notify, RunError
from cronhive.enums import ErrorType, LeaseScope, RunStatus, Trigger
from cronhive.handlers import HandlerContext
from cronhive.leases import Lease, process_holder
from cronhive.run_output import LogCapture, attempt_logger
from cronhive.worker.tracebacks import traceback_excerpt

#: ``error.message`` is cut to this many characters.
MAX_ERROR_CHARS = 2000



def worker_name() -> str:
    """``hostname:pid`` of this worker process (the run's ``worker`` field)."""
    return process_holder()


def bounded_error(error_type: str, message: str) -> RunError:
    """The run's ``error``: its type, and the message cut to `MAX_ERROR_CHARS`."""
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return RunError(error_type if isinstance(error_type, ErrorType) else error_type[:200], message)


class LeaseLostInterrupt(Interrupt):
    """Raised asynchronously in a handler's thread when its attempt's lease was lost
    (expired or taken over): a newer attempt may be running, so this one stops."""


class RunCancelledInterrupt(Interrupt):
    """Raised asynchronously in a handler's thread when ``POST /runs/:run_id/cancel``
    asked its run to stop (the way Dramatiq's time limit interrupts a handler)."""


def classify(exception: BaseException | None, timeout_s: int | None) -> tuple[RunStatus, RunError | None]:
    """Status and error of an attempt that ended with ``exception`` (None: it returned)."""
    if exception is None:
        return RunStatus.SUCCEEDED, None
    if isinstance(exception, TimeLimitExceeded):
        return RunStatus.TIMED_OUT, bounded_error(ErrorType.TIMEOUT, f"the handler ran longer than timeout_s={timeout_s}")
    if isinstance(exception, RunCancelledInterrupt):
        return RunStatus.CANCELLED, bounded_error(ErrorType.CANCELLED, "cancelled while the handler ran")
    if isinstance(exception, LeaseLostInterrupt):
        return RunStatus.ABANDONED, bounded_error(ErrorType.LEASE_LOST, "the attempt lost its lease while the handler ran")
    # an exception may name its error type (the http handler's ``unexpected_status``...)
    error_type = getattr(exception, "error_type", None)
    if not isinstance(error_type, str) or not error_type:
        error_type = type(exception).__name__
    error = bounded_error(error_type, str(exception) or repr(exception))
    excerpt = traceback_excerpt(exception)
    if excerpt is not None:  # where the handler failed: its last frames, bounded
        error = replace(error, traceback=excerpt)
    return RunStatus.FAILED, error


@dataclass
class Attempt:
    """A started attempt. ``number`` is the run's ``attempt`` (1 for the first)."""

    run_id: str
    job_id: str
    number: int
    worker: str
    lease: Lease
    handler: str
    args: dict[str, Any]
    scheduled_for: datetime | None
    trigger: Trigger
    timeout_s: int | None
    max_retries: int
    started_at: datetime
    #: the `Job.incarnation` it runs for (its outcome is written on that job only)
    job_incarnation: str | None = None
    #: the `Job.revision` it started from (what a hand-on's snapshot says of the job)
    job_revision: int | None = None
    #: a queued slot run (backfill under a job lease, fire_all under forbid): when it ends,
    #: the job's oldest waiting one is published at once rather than left to its poll
    queued_slot: bool = False
    started_monotonic: float = field(default_factory=time.monotonic)
    thread_id: int = field(default_factory=threading.get_ident)
    #: set by the keeper when a renewal found the lease gone
    lost: bool = False
    #: True while the actor is inside the handler call (the keeper may interrupt only then)
    in_handler: bool = False
    #: set by the keeper when the run was asked to stop (``cancel_requested``)
    cancelled: bool = False
    finished: bool = False
    #: the backoff chosen for this attempt's retry, and whether its message went out (an
    #: outcome written again through a MongoDB outage publishes the retry once, same delay)
    retry_delay_ms: int | None = None
    retry_published: bool = False
    #: the job's notify, name and last recorded outcome when the attempt started (for its events)
    notify: Notify | None = None
    job_name: str | None = None
    previous_status: RunStatus | None = None
    #: the lines the handler logs through ``ctx.logger`` (the run's ``log``) and what it returned
    capture: LogCapture = field(default_factory=LogCapture)
    result: Any = None

    @property
    def token(self) -> int:
        return self.lease.token

    @property
    def scope(self) -> LeaseScope:
        """Where its lease lives: the job (``forbid``/``buffer_one``) or the run itself (``allow``)."""
        return self.lease.scope

    def duration_ms(self) -> int:
        """Milliseconds since the attempt started, on the monotonic clock."""
        return int((time.monotonic() - self.started_monotonic) * 1000)

    def log_extra(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "run_id": self.run_id, "worker": self.worker, "attempt": self.number}

    def context(self, logger: Any) -> HandlerContext:
        return HandlerContext(
            job_id=self.job_id,
            run_id=self.run_id,
            attempt=self.number,
            scheduled_for=self.scheduled_for,
            trigger=self.trigger,
            logger=attempt_logger(logger, self.capture),
            fencing_token=self.token,
        )


_CURRENT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("cronhive_attempt", default=None)


def current_attempt() -> Attempt | None:
    """The attempt the middleware started for the message this thread processes."""
    return _CURRENT.get()


def current_log_context() -> dict[str, Any] | None:
    """The log context of this thread's attempt (`cronhive.logs.add_context_provider`)."""
    attempt = _CURRENT.get()
    return attempt.log_extra() if attempt is not None else None


def set_current_attempt(attempt: Attempt | None) -> None:
    _CURRENT.set(attempt)
