"""What a worker does with a delivered run message: pure functions of what it read.

A message may arrive for a run that already ended, that another delivery is
executing, whose previous attempt died, or whose job lease another run holds.
`decide` answers, before any lease is claimed, from the run document, the job
document, the database clock's ``now`` and two facts about the message:

* ``redelivered`` — RabbitMQ redelivered it (the consumer that had it died);
* ``after_attempt`` — set on the messages a worker publishes itself (a retry
  after attempt N, a recovery of dead attempt N, a message that waited): it
  follows attempt N and must not be dropped while attempt N still holds a
  live lease.

`decide_refused` answers when the lease claim was refused. The rules (SPEC §4–§5):

* a run already final → acknowledge, never run it again;
* a run ``running`` under a live lease → a duplicate delivery is acknowledged
  without running; a message that follows that attempt (redelivered, retry)
  waits until the lease expires or the run ends, then decides again;
* a run ``running`` under an expired lease (its worker died or stalled) → a new
  attempt when retries remain, else ``abandoned``;
* ``pending``/``queued`` → start (after ``retry_at`` for a retry; a slot run not
  before its slot);
* lease refused: held by another delivery of this run → as a live attempt;
  held by another run → ``forbid``: ``skipped``; ``buffer_one``: the buffered run
  waits for the lease (retries not consumed), any other is ``skipped``; a retry,
  a fire_all slot under ``forbid`` and a backfill run wait; a dead attempt's retry
  is ``abandoned``;
* a cancel requested for a run whose attempt died → ``cancelled``;
* none of these resolutions of an expired attempt (abandon it, start one in its
  place) while its lease may have expired only because MongoDB was unreachable
  (`held_after_outage`, `worker.outages`): the message waits, following it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cronhive.domain import Job, Run, RunError
from cronhive.enums import ErrorType, LeaseScope, OverlapPolicy, RunStatus, Trigger
from cronhive.leases import Lease
from cronhive.worker.attempts import bounded_error

#: Shortest wait of a waiting message, and how long after a lease's expiry it looks again.
MIN_WAIT_MS = 100
WAIT_MARGIN_MS = 100
#: A slot run delivered at most this before its slot starts at the slot (its delivery sleeps
#: until then); one delivered earlier waits (clocks of processes differ a little).
EARLY_TOLERANCE_MS = 250


@dataclass(frozen=True)
class Start:
    """Claim the lease and start attempt ``run.attempt + 1``."""

    replaces_dead_attempt: bool = False


@dataclass(frozen=True)
class Acknowledge:
    """Do not run; nothing to record (duplicate delivery, run already final or gone)."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """Publish the message again with a delay and look again then (retries not consumed)."""

    delay_ms: int
    after_attempt: int | None
    reason: str


@dataclass(frozen=True)
class Skip:
    """Record the run ``skipped``: it will never start."""

    error: RunError


@dataclass(frozen=True)
class Abandon:
    """Record the running run's dead attempt ``abandoned`` (no retry left), or
    ``cancelled`` when a cancel was requested for it."""

    reason: str
    cancelled: bool = False


@dataclass(frozen=True)
class Fail:
    """Record the not-started run ``failed`` with ``error`` at once, no attempt made, and
    disable its job with ``disable_reason``: it cannot run (its handler is registered on
    no live worker, or its document is not a valid job)."""

    error: RunError
    disable_reason: str


Decision = Start | Acknowledge | Wait | Skip | Abandon | Fail


def millis(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def attempt_lease(run: Run, job: Job | None) -> Lease | None:
    """The lease of the run's current attempt, if that attempt still holds it
    (it may have expired): on the run itself under ``allow``, else on the job."""
    lease = run.lease if run.lease_scope == LeaseScope.RUN else job.lease if job is not None else None
    if lease is None or run.lease_holder is None:
        return None
    if lease.holder != run.lease_holder or lease.token != run.lease_token:
        return None
    return lease


def attempt_alive(run: Run, job: Job | None, now: datetime) -> bool:
    """The run's current attempt holds an unexpired lease at ``now``."""
    lease = attempt_lease(run, job)
    return lease is not None and lease.live(now)


def retries_left(run: Run, job: Job) -> bool:
    """Attempts so far (``run.attempt``) are at most ``max_retries``: one more may start."""
    return run.attempt <= job.max_retries


def wait_ms(until: datetime | None, now: datetime, lease_s: float) -> int:
    """How long a waiting message sleeps: until ``until`` (a lease's expiry, a retry's
    time) plus a margin, at most a third of a lease so a released lease is noticed."""
    ceiling = int(lease_s * 1000 / 3)
    if until is None:
        return max(MIN_WAIT_MS, ceiling)
    return max(MIN_WAIT_MS, min(millis(until - now) + WAIT_MARGIN_MS, ceiling))


def first_attempt_slot(run: Run) -> datetime | None:
    """The slot a slot run's first attempt waits for (None: a retry, or not a slot run)."""
    if run.trigger != Trigger.SCHEDULE or run.attempt > 0:
        return None
    return run.scheduled_for


def early(run: Run, now: datetime) -> bool:
    """A slot run delivered before its slot (by more than `EARLY_TOLERANCE_MS`): the leader
    publishes a run planned ahead at its instant, so this is only a safety net — a slot
    run never starts before its slot."""
    slot = first_attempt_slot(run)
    return slot is not None and millis(slot - now) > EARLY_TOLERANCE_MS


def follows(run: Run, *, redelivered: bool, after_attempt: int | None) -> bool:
    """Whether the message must wait for the run's current (live) attempt rather than
    be dropped as a duplicate: it was redelivered, or it follows that very attempt."""
    if after_attempt is not None:
        return run.attempt <= after_attempt
    return redelivered


def decide(
    run: Run | None,
    job: Job | None,
    now: datetime,
    *,
    lease_s: float,
    redelivered: bool = False,
    after_attempt: int | None = None,
) -> Decision:
    """What to do with a message for ``run`` (see the module docstring)."""
    if run is None:
        return Acknowledge("the run does not exist (deleted, or removed by retention)")
    status = run.status
    if status.is_final:
        return Acknowledge(f"the run is already {status}")
    if status == RunStatus.RUNNING:
        return _decide_running(run, job, now, lease_s=lease_s, redelivered=redelivered, after_attempt=after_attempt)
    if job is None:
        return Skip(bounded_error(ErrorType.JOB_NOT_FOUND, "the job was deleted before the run started"))
    if early(run, now):
        assert run.scheduled_for is not None
        return Wait(wait_ms(run.scheduled_for, now, lease_s), after_attempt, "its slot has not come yet")
    retry_at = run.retry_at
    if retry_at is not None and retry_at > now:
        return Wait(wait_ms(retry_at, now, lease_s), after_attempt, "the retry's backoff has not elapsed")
    return Start()


def _decide_running(
    run: Run, job: Job | None, now: datetime, *, lease_s: float, redelivered: bool,
    after_attempt: int | None,
) -> Decision:
    attempt = run.attempt
    lease = attempt_lease(run, job)
    if lease is not None and lease.live(now):
        if follows(run, redelivered=redelivered, after_attempt=after_attempt):
            return Wait(wait_ms(lease.expires_at, now, lease_s), attempt,
                        f"attempt {attempt} holds a live lease; waiting for it to end or expire")
        return Acknowledge(f"attempt {attempt} is running under a live lease (duplicate delivery)")
    if run.cancel_requested:
        return Abandon(f"cancel requested; attempt {attempt} stopped renewing its lease", cancelled=True)
    if job is None:
        return Abandon(f"attempt {attempt} stopped renewing its lease and the job was deleted")
    if retries_left(run, job):
        return Start(replaces_dead_attempt=True)
    return Abandon(f"attempt {attempt} (worker {run.worker}) stopped renewing its lease; no retries left")


def resolves_expired_attempt(decision: Decision) -> bool:
    """The decision ends the run's current attempt as dead: abandons it (or records it
    cancelled), or starts a new attempt in its place."""
    return isinstance(decision, Abandon) or (isinstance(decision, Start) and decision.replaces_dead_attempt)


def held_after_outage(decision: Decision, run: Run | None, now: datetime, holding_until: datetime | None, *,
                      lease_s: float) -> Decision:
    """``decision``, unless it resolves an expired attempt while the process holds such
    attempts for their workers (``holding_until``: MongoDB was unreachable lately, see
    `worker.outages`): then the message waits, following that attempt, and decides again."""
    if holding_until is None or run is None or not resolves_expired_attempt(decision):
        return decision
    return Wait(wait_ms(holding_until, now, lease_s), run.attempt,
                f"MongoDB was unreachable: attempt {run.attempt}'s lease expired while nobody could renew it; "
                f"its worker has until {holding_until.isoformat(timespec='milliseconds')} to write its outcome")


def decide_refused(
    run: Run,
    job: Job | None,
    now: datetime,
    *,
    lease_s: float,
    redelivered: bool = False,
    after_attempt: int | None = None,
) -> Decision:
    """What to do when the lease claim for ``run`` was refused (``job`` re-read after it)."""
    own = run.lease_scope == LeaseScope.RUN or (job is not None and job.overlap_policy == OverlapPolicy.ALLOW)
    lease = run.lease if own else job.lease if job is not None else None
    holder_run = lease.run_id if lease is not None else None
    expires_at = lease.expires_at if lease is not None else None
    if lease is not None and holder_run == run.run_id:
        # another delivery of this very run holds it: it started (or is starting) an attempt
        if follows(run, redelivered=redelivered, after_attempt=after_attempt):
            return Wait(wait_ms(expires_at, now, lease_s), run.attempt, "another delivery of this run holds its lease")
        return Acknowledge("another delivery of this run holds its lease (duplicate delivery)")
    if run.status == RunStatus.RUNNING:
        return Abandon(f"its attempt died and run {holder_run} now holds the job's lease")
    if run.attempt > 0:
        return Wait(wait_ms(expires_at, now, lease_s), after_attempt,
                    f"retry waiting for run {holder_run} to release the job's lease")
    if job is not None and job.queues_slots and run.trigger == Trigger.SCHEDULE:
        return Wait(wait_ms(expires_at, now, lease_s), after_attempt,
                    f"fire_all under forbid: waiting for run {holder_run} to release the job's lease")
    if run.trigger == Trigger.BACKFILL:  # a backfill runs every slot it chose, one after another
        return Wait(wait_ms(expires_at, now, lease_s), after_attempt,
                    f"backfill: waiting for run {holder_run} to release the job's lease")
    if job is not None and job.overlap_policy == OverlapPolicy.BUFFER_ONE and job.buffered_run_id == run.run_id:
        return Wait(wait_ms(expires_at, now, lease_s), after_attempt,
                    f"buffer_one: waiting for run {holder_run} to release the job's lease")
    return Skip(bounded_error(ErrorType.OVERLAP, f"the job's lease is held by run {holder_run}"))
