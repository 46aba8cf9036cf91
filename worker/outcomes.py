"""`OutcomeWriter`: the outcomes of a worker process's finished attempts, written
behind its starts.

A worker thread whose handler succeeded (or was cancelled) hands the attempt's
outcome to its process's writer and goes on to its next message. The writer writes
what it was handed in batches — the runs' ends as one batch of the store's group
commit, then the jobs' ``last_run_*`` with their lease releases as another — as soon
as no thread of the process is starting an attempt (`starting`), or once the oldest
outcome has waited `OUTCOME_DEFER_S`. An idle process writes at once; under a herd
the process's starts go first and the outcomes follow in a few large statements
instead of one small one per thread between every start (on the embedded store a
statement costs more than the documents it writes).

The wait is bounded by a twelfth of a lease: the keeper stopped renewing the
attempt's lease when its handler returned, and a held lease always has more than a
sixth left (`cronhive.leases.outlasts_renewal`, the keeper's pass). What waits is
only the release: the next run of a ``forbid`` job waits at most that much longer
under load.

Only outcomes that need nothing more of their message are written here. A failed or
timed-out run's message is rejected (RabbitMQ dead-letters it) before Dramatiq
acknowledges it, a retry is published and its lease handed over, and a queued slot
hands the lease on to the next one: the worker thread writes those itself, as before.

Through a MongoDB outage the writer keeps the outcomes and writes them again every
`OUTCOME_RETRY_EVERY_S` for up to `OUTCOME_RETRY_S`, fenced as ever (each lands only
if no newer attempt started; one that already landed is recognised by its proof).
Dramatiq acknowledges a message once its handler returned, so a process killed with
outcomes unwritten leaves those runs to the reaper — recorded ``abandoned``, or run
again where retries are left — as it would had the process died a moment earlier,
with the handler running. On shutdown the writer writes what it holds first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from cronhive import metrics
from cronhive.domain import AttemptFinish, JobOutcome, RunError
from cronhive.enums import RunStatus
from cronhive.errors import Unavailable
from cronhive.store.base import ID_CHUNK
from cronhive.store.protocols import WorkerStore
from cronhive.worker.attempts import Attempt
from cronhive.worker.outages import StoreOutages

log = logging.getLogger("cronhive.worker")

#: How long an outcome waits behind the process's starts, at most (and at most a
#: twelfth of the job lease).
OUTCOME_DEFER_S = 2.0
#: How long a finished attempt's outcome is written again while MongoDB is unreachable,
#: and how often.
OUTCOME_RETRY_S = 120.0
OUTCOME_RETRY_EVERY_S = 0.5
#: How long no start must have been under way for outcomes to be written before
#: `OUTCOME_DEFER_S`: the gap between a thread's handing over an outcome and its next
#: message's start (under a herd) is shorter.
QUIET_S = 0.01
#: Most outcomes in one batch.
MAX_OUTCOMES = 500
#: Outcomes in a batch written because they are overdue while starts go on: one
#: statement per collection (`cronhive.store.base.ID_CHUNK`), so starts and overdue
#: outcomes take turns.
OVERDUE_OUTCOMES = ID_CHUNK
#: How long shutdown waits for the writer to write what it holds.
STOP_TIMEOUT_S = OUTCOME_RETRY_S + 10


def defer_s(lease_s: float) -> float:
    """How long an outcome may wait behind starts under a job lease of ``lease_s``."""
    return min(OUTCOME_DEFER_S, lease_s / 12)


@dataclass(eq=False)
class Finished:
    """An attempt's final outcome, handed to the writer: the run's end and its job's."""

    attempt: Attempt
    finish: AttemptFinish
    job: JobOutcome
    #: when it was handed (monotonic clock)
    handed_at: float = field(default_factory=time.monotonic)
    run_written: bool = False
    #: the run's end did not apply: a newer attempt owns the run
    rejected: bool = False
    job_written: bool = False
    job_applied: bool = False

    @property
    def done(self) -> bool:
        return self.rejected or self.job_written


def log_outcome(attempt: Attempt, status: RunStatus, duration_ms: int, error: RunError | None) -> None:
    """The one line about a finished run (a failed one's traceback excerpt is in its error)."""
    metrics.WORKER_RUNS.labels(outcome=status).inc()
    if error is None:
        log.info("run %s in %d ms", status, duration_ms, extra=attempt.log_extra())
    else:
        log.warning("run %s in %d ms: %s: %s", status, duration_ms, error.type, error.message,
                    extra=attempt.log_extra())


def log_rejected(attempt: Attempt, status: str) -> str:
    log.warning("late write rejected: a newer attempt owns the run (this attempt would have recorded %s)",
                status, extra=attempt.log_extra())
    return "rejected"


def log_job_lease_gone(attempt: Attempt) -> None:
    log.warning("the job lease was no longer held at the end of the run; job outcome not recorded",
                extra=attempt.log_extra())


class OutcomeWriter:
    """Writes a process's handed-over outcomes in batches, behind its starts."""

    def __init__(self, store: WorkerStore, outages: StoreOutages, lease_s: float,
                 after_finish: Callable[[Attempt], object] | None = None, *, defer: float | None = None) -> None:
        self.store = store
        self.outages = outages
        #: how long an outcome waits behind starts at most (``defer``: tests)
        self.defer_s = defer_s(lease_s) if defer is None else defer
        #: called with the attempt once its run's outcome is written (the history trim)
        self.after_finish = after_finish
        self._cond = threading.Condition()
        self._held: list[Finished] = []
        self._starting = 0
        #: when the last start ended (monotonic clock)
        self._last_start = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: batches written (for tests and the bench's logs)
        self.batches = 0

    # -- the worker threads ----------------------------------------------------------

    @contextmanager
    def starting(self) -> Iterator[None]:
        """The span in which a worker thread starts an attempt: outcomes wait it out."""
        with self._cond:
            self._starting += 1
        try:
            yield
        finally:
            with self._cond:
                self._starting -= 1
                self._last_start = time.monotonic()
                if self._starting == 0:
                    self._cond.notify_all()

    def hand(self, finished: Finished) -> None:
        """Write ``finished`` soon; returns at once."""
        with self._cond:
            self._held.append(finished)
            self._ensure_thread()
            self._cond.notify_all()

    def held(self) -> int:
        """Outcomes handed and not yet written."""
        with self._cond:
            return len(self._held)

    # -- the process -----------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._ensure_thread()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Write what is held (without waiting for starts), then end the thread."""
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            left = len(self._held)
        if left:
            log.error("%d finished runs' outcomes were not written before the worker stopped; the reaper "
                      "resolves them", left)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="cronhive-outcomes", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._write_kept(batch)

    def _next_batch(self) -> list[Finished] | None:
        """The next outcomes to write, once no start is under way or the oldest waited
        `defer_s` (None: stopping, and nothing is held)."""
        with self._cond:
            while True:
                if not self._held:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                if self._stopping:
                    size = MAX_OUTCOMES
                    break
                now = time.monotonic()
                left = self.defer_s - (now - self._held[0].handed_at)
                if left <= 0:  # overdue while starts go on: a statement's worth, then the starts again
                    size = OVERDUE_OUTCOMES
                    break
                if self._starting == 0:
                    quiet_for = now - self._last_start
                    if quiet_for >= QUIET_S:
                        size = MAX_OUTCOMES
                        break
                    left = min(left, QUIET_S - quiet_for)
                self._cond.wait(left)
            batch, self._held = self._held[:size], self._held[size:]
            return batch

    # -- writing ---------------------------------------------------------------------

    def _write_kept(self, batch: list[Finished]) -> None:
        """`write`, again every `OUTCOME_RETRY_EVERY_S` while MongoDB is unreachable,
        for up to `OUTCOME_RETRY_S`."""
        deadline = time.monotonic() + OUTCOME_RETRY_S
        waited = False
        while True:
            try:
                self.write(batch)
            except Unavailable:
                self.outages.unreachable()
                if time.monotonic() >= deadline:
                    log.error("MongoDB stayed unavailable: %d finished runs' outcomes were not written; "
                              "their leases expire and the reaper resolves them", len(batch))
                    return
                if not waited:
                    log.warning("MongoDB is unavailable as runs end: %d outcomes are kept and written when it "
                                "returns", len(batch), extra={"run_ids": [item.attempt.run_id for item in batch]})
                    waited = True
                time.sleep(OUTCOME_RETRY_EVERY_S)
                continue
            except Exception:
                log.exception("could not record %d outcomes; their leases expire and the runs are retried or "
                              "abandoned", len(batch))
                return
            if waited:
                log.info("%d outcomes written after the MongoDB outage", len(batch))
            return

    def write(self, batch: Sequence[Finished]) -> None:
        """Write the runs' ends, then their jobs' outcomes, of what is not yet written
        in ``batch``; then log each. Raises what the store raised (what was written
        stays written: calling again goes on from there)."""
        runs = [item for item in batch if not item.run_written]
        if runs:
            for item, applied in zip(runs, self.store.finish_run_attempts([item.finish for item in runs]), strict=True):
                item.run_written = True
                item.rejected = not applied
        for round_ in job_rounds([item for item in batch if not item.done]):
            for item, applied in zip(round_, self.store.record_job_outcomes([item.job for item in round_]),
                                     strict=True):
                item.job_written = True
                item.job_applied = applied
        self.batches += 1
        for item in batch:
            self._complete(item)

    def _complete(self, item: Finished) -> None:
        attempt, status = item.attempt, item.finish.end.status
        if item.rejected:
            log_rejected(attempt, status)
            return
        if not item.job_applied and item.job.lease is not None:
            log_job_lease_gone(attempt)
        log_outcome(attempt, status, item.finish.end.duration_ms or 0, item.finish.end.error)
        if self.after_finish is not None:
            self.after_finish(attempt)


def job_rounds(items: Sequence[Finished]) -> Iterator[list[Finished]]:
    """``items`` in rounds that name each job once, in the order handed: two outcomes of
    one job are written one after the other (the later run's ``last_run_*`` last)."""
    left = list(items)
    while left:
        seen: set[str] = set()
        round_: list[Finished] = []
        later: list[Finished] = []
        for item in left:
            (later if item.job.job_id in seen else round_).append(item)
            seen.add(item.job.job_id)
        yield round_
        left = later


__all__ = ["OUTCOME_DEFER_S", "OUTCOME_RETRY_EVERY_S", "OUTCOME_RETRY_S", "Finished", "OutcomeWriter", "defer_s",
           "job_rounds", "log_job_lease_gone", "log_outcome", "log_rejected"]
