"""`RunLifecycle`: the Dramatiq middleware around every ``execute_run`` message.

Before the actor (``before_process_message``):

0. a slot run's first delivery carrying its job's snapshot (`cronhive.snapshots`)
   starts without reading anything, and writes only the run: the attempt holds the
   job lease as the run's reservation made it (held for a lease first when less than
   half a lease is left, or it expired while nobody took it), and the run is marked ``running`` by one compare-and-set through
   the store's group commit (`cronhive.store.group_commit`: the writes of all the
   process's threads batched into one command); if it does not apply (the job or
   the run is no longer as published), the steps below decide;
1. read the run and its job and `decide` (`worker.decisions`): acknowledge a
   duplicate or a finished run, make a message wait (re-published with a delay,
   retries not consumed), record ``skipped`` or ``abandoned``, or start;
2. to start, take the lease: a first attempt whose run's reservation (``run:<run_id>``)
   holds the job lease starts under it as it stands (the run document decides which
   delivery starts, so a live reservation of its own run is never taken over);
   otherwise claim with a new holder and fencing token per attempt — the job's lease
   (free, expired, or a retry's reservation), or under ``allow`` the run's own lease;
3. mark the run ``running`` (attempt + 1, worker, started_at, lateness_ms) by a
   compare-and-set on what was read, so of racing deliveries one attempt starts;
4. hand the attempt to the `LeaseKeeper` (renewal) and set the message's Dramatiq
   ``time_limit`` from the job's ``timeout_s`` (this middleware runs before
   `TimeLimit`, which reads it).

A message that does not start raises `SkipMessage`, so the actor is not called.

After the actor (``after_process_message``): stop renewing, then record the
outcome fenced on the attempt's token — ``succeeded``, ``failed``,
``timed_out``; on failure with retries left, publish the retry with exponential
backoff (a new attempt of the same run) and hand the job lease back to the run's
reservation until then; otherwise release the job lease in the same update that
writes ``last_run_*`` and, for a failure, reject the message so RabbitMQ
dead-letters it to ``<queue>.XQ``. A write whose token is stale (a newer attempt
took over) is rejected and logged, and nothing else is touched. In a worker
process (``write_behind``) a succeeded or cancelled run's outcome is handed to the
process's `OutcomeWriter` (`worker.outcomes`), which writes it behind the process's
starts, and the thread goes on to its next message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from dramatiq import Broker, Message
from dramatiq.broker import MessageProxy
from dramatiq.common import compute_backoff, q_name
from dramatiq.middleware import Interrupt, Middleware, SkipMessage

from cronhive import metrics
from cronhive.broker import BEHIND_OPTION, RUN_ACTORS, runs_queue_of
from cronhive.clock import Clock
from cronhive.domain import (
    MAX_BACKFILL_SLOTS,
    MAX_FIRE_ALL,
    AttemptEnd,
    AttemptFinish,
    AttemptStart,
    Job,
    JobOutcome,
    Run,
    RunError,
    RunOutput,
    notifications_for,
    outcome_event,
)
from cronhive.enums import NOT_STARTED, ErrorType, LeaseScope, NotifyEvent, OverlapPolicy, RunStatus, Trigger
from cronhive.errors import Unavailable
from cronhive.leases import Lease, attempt_holder, outlasts_renewal, reservation_holder
from cronhive.run_output import run_output
from cronhive.settings import Settings
from cronhive.snapshots import SNAPSHOT_OPTION, JobSnapshot
from cronhive.store.protocols import WorkerStore
from cronhive.worker import decisions
from cronhive.worker.attempts import (
    Attempt,
    bounded_error,
    classify,
    current_attempt,
    set_current_attempt,
    worker_name,
)
from cronhive.worker.decisions import Abandon, Acknowledge, Decision, Fail, Skip, Start, Wait
from cronhive.worker.keeper import LeaseKeeper
from cronhive.worker.outages import StoreOutages
from cronhive.worker.outcomes import (
    OUTCOME_RETRY_EVERY_S,
    OUTCOME_RETRY_S,
    Finished,
    OutcomeWriter,
    log_job_lease_gone,
    log_outcome,
    log_rejected,
)
from cronhive.worker.records import (
    AFTER_ATTEMPT,
    HANDED_ON,
    abandon_dead_attempt,
    attempt_record,
    dead_attempt_record,
    follow_up_message,
    hand_on_message,
)

log = logging.getLogger("cronhive.worker")

#: Final statuses whose outcome the `OutcomeWriter` writes (with ``write_behind``): their
#: message needs nothing more once the handler returned.
WRITTEN_BEHIND = frozenset({RunStatus.SUCCEEDED, RunStatus.CANCELLED})
#: Longest retry backoff.
MAX_BACKOFF_MS = 3_600_000
#: How often a queued slot run looks again whether the older ones have started, per run ahead.
SLOT_QUEUE_POLL_MS = 500
#: How long a run whose handler is not registered here (but is on another live worker)
#: waits before it is delivered again, to a worker that has it (rolling deploys).
HANDLER_ELSEWHERE_WAIT_MS = 1000
#: Longest wait of a slot run queued behind older ones before it looks again.
MAX_SLOT_QUEUE_WAIT_MS = 60_000
#: Rounds of read–claim–start before a delivery that keeps losing races gives up.
MAX_START_ROUNDS = 3
#: Exceptions that end a started attempt as its outcome (anything the handler raises, the
#: time limit, a lost lease): Dramatiq's ``throws`` for the message, so it does not log
#: them as "unhandled" with a traceback (the run's error keeps a traceback excerpt).
HANDLER_OUTCOMES: tuple[type[BaseException], ...] = (Exception, Interrupt)


def queued_slot(run: Run, job: Job) -> bool:
    """Its slot runs queue for the job's lease, oldest first: a backfill run under a job
    lease (``forbid``, ``buffer_one``), or a slot run of ``fire_all`` under ``forbid``."""
    if run.trigger == Trigger.BACKFILL:
        return job.overlap_policy.uses_job_lease
    return run.trigger == Trigger.SCHEDULE and job.queues_slots


def slot_queue_wait_ms(older: int) -> int:
    """How long a queued backfill run (under a job lease) with ``older`` runs ahead of it
    waits before looking again (a fire_all slot no longer does: `_behind_older_slots`):
    `SLOT_QUEUE_POLL_MS` per run ahead, at most `MAX_SLOT_QUEUE_WAIT_MS`. Each run that
    ends publishes the next at once (`RunLifecycle._hand_on`), so this poll is only the
    fallback, and a thousand waiting runs cost a few messages a second, not a thousand;
    the queue's head (no run ahead) waits for the lease instead, at most a third of one.

    Until 2026-12-07 a fire_all slot polled every `SLOT_QUEUE_POLL_MS` however far back
    it was: behind a failover's backlog those looks filled the queue, every hand-on
    waiting behind them (failover bench, quick: 3,182 looks for 2,036 starts; with the
    leader's fix below and that poll, 6,735 looks for 1,232 starts). A third of a lease
    per run ahead had been tried on 2026-12-03 and executed no more, as the leader then
    still reserved a free lease for a new slot while older ones waited, each such queue
    standing still until that reservation expired; it no longer does
    (`cronhive.scheduler.overlap`). README "Performance" has the runs."""
    return max(decisions.MIN_WAIT_MS, min(SLOT_QUEUE_POLL_MS * max(1, older), MAX_SLOT_QUEUE_WAIT_MS))


def backoff_ms(attempt: int, base_ms: int) -> int:
    """Delay before the retry that follows ``attempt``: Dramatiq's ``compute_backoff`` —
    ``int(base × 2^(attempt-1) × U(1, 2))`` ms, and ``int(1 h × U(0.5, 1))`` once that
    passes an hour (README "Retries")."""
    return compute_backoff(max(attempt - 1, 0), factor=base_ms, jitter=True, max_backoff=MAX_BACKOFF_MS)[1]


def _run_log(run_id: str, job_id: str | None, worker: str, **more: Any) -> dict[str, Any]:
    return {"run_id": run_id, "job_id": job_id, "worker": worker, **more}


class HistoryTrimmer:
    """Keeps each job's run history to ``limit`` runs, trimming every few finished runs
    of the job (per process) rather than after each one."""

    def __init__(self, store: WorkerStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.every = max(1, min(50, limit // 20))
        self._finished: Counter[str] = Counter()
        self._lock = threading.Lock()

    def after_finish(self, job_id: str) -> int:
        with self._lock:
            self._finished[job_id] += 1
            due = self._finished[job_id] % self.every == 0
        if not due:
            return 0
        deleted = self.store.trim_run_history(job_id, self.limit)
        if deleted:
            log.info("trimmed %d old runs", deleted, extra={"job_id": job_id})
        return deleted


class RunLifecycle(Middleware):
    """Leases, fencing, outcome recording, time limit and retries for run messages."""

    def __init__(
        self,
        store: WorkerStore,
        clock: Clock,
        settings: Settings,
        keeper: LeaseKeeper,
        *,
        worker: str | None = None,
        handlers: frozenset[str] | None = None,
        outages: StoreOutages | None = None,
        write_behind: bool = False,
    ) -> None:
        self.store = store
        #: the handlers this process has (None: not checked before a start)
        self.handlers = handlers
        self.clock = clock
        self.settings = settings
        self.keeper = keeper
        self.worker = worker or worker_name()
        self.lease_s = float(settings.job_lease_s)
        #: what this process saw of MongoDB outages: no expired attempt is resolved right after one
        self.outages = outages or StoreOutages(self.lease_s)
        self.history = HistoryTrimmer(store, settings.run_history_limit)
        #: ``write_behind``: succeeded and cancelled runs' outcomes are written by the
        #: process's `OutcomeWriter`, behind its starts (else by the worker thread)
        self.outcomes = (OutcomeWriter(store, self.outages, self.lease_s, self._trim_history)
                         if write_behind else None)

    # -- process -------------------------------------------------------------------

    def after_process_boot(self, broker: Broker) -> None:
        self.keeper.start()
        if self.outcomes is not None:
            self.outcomes.start()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self.outcomes is not None:
            self.outcomes.stop()
        self.keeper.stop()

    # -- before the actor ----------------------------------------------------------

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.actor_name not in RUN_ACTORS:
            return
        set_current_attempt(None)
        try:
            with self._starting():
                attempt = self.begin(broker, message)
        except SkipMessage:
            raise
        except Exception as exc:
            if isinstance(exc, Unavailable):
                self.outages.unreachable()
            # Dramatiq would swallow this and call the actor without a lease: never.
            log.exception("could not start the run; publishing it again later",
                          extra=_run_log(message.args[0], message.kwargs.get("job_id"), self.worker))
            self._start_later(broker, message)
            raise SkipMessage("run not started") from None
        set_current_attempt(attempt)
        if attempt.timeout_s:
            message.options["time_limit"] = int(attempt.timeout_s) * 1000
        # what the handler raises is the run's outcome, recorded and logged once (WARNING) by
        # `finish`: Dramatiq logs such "expected" exceptions at INFO, without a traceback
        message.options["throws"] = HANDLER_OUTCOMES

    def _starting(self) -> AbstractContextManager[None]:
        return nullcontext() if self.outcomes is None else self.outcomes.starting()

    def begin(self, broker: Broker, message: MessageProxy) -> Attempt:
        """Start an attempt for the message's run, or carry out why not (raises `SkipMessage`)."""
        run_id = message.args[0]
        redelivered = bool(getattr(message, "redelivered", False))
        after_attempt = message.options.get(AFTER_ATTEMPT)
        handed_on = bool(message.options.get(HANDED_ON))
        if message.options.get(BEHIND_OPTION) and not handed_on and after_attempt is None:
            # its older slot run's end hands the lease on to it (or the reaper, where that broke)
            log.debug("not running: published behind an older slot run of the job; it starts when the lease is "
                      "handed on to it", extra=_run_log(run_id, message.kwargs.get("job_id"), self.worker))
            raise SkipMessage("published behind an older slot run")
        snapshot = self._usable_snapshot(message, redelivered, after_attempt)
        if snapshot is not None:
            started = self._start_from_snapshot(run_id, snapshot, handed_on=handed_on)
            if started is not None:
                return started
        for _ in range(MAX_START_ROUNDS):
            outcome, run, job, now = self._try_start(run_id, redelivered, after_attempt, handed_on)
            if isinstance(outcome, Attempt):
                return outcome
            if outcome is not None:
                self._carry_out(broker, message, outcome, run, job, now)
        self._carry_out(broker, message, Acknowledge("other deliveries keep winning the race to start it"),
                        None, None, self.clock.now())
        raise AssertionError("unreachable")  # _carry_out always raises

    def _usable_snapshot(self, message: MessageProxy, redelivered: bool,
                         after_attempt: int | None) -> JobSnapshot | None:
        """The job snapshot the message carries, when this delivery may start from it: a
        first delivery (not redelivered, not one a worker published to follow an
        attempt) of a handler this process has."""
        if redelivered or after_attempt is not None:
            return None
        snapshot = JobSnapshot.from_option(message.options.get(SNAPSHOT_OPTION))
        if snapshot is None or snapshot.job_id != message.kwargs.get("job_id"):
            return None
        if self.handlers is not None and snapshot.handler not in self.handlers:
            return None
        return snapshot

    def _start_from_snapshot(self, run_id: str, snapshot: JobSnapshot, *, handed_on: bool = False) -> Attempt | None:
        """Start attempt 1 without reading anything (`cronhive.snapshots`): under the job
        lease as the run's reservation holds it (held for a lease first when it would not
        outlast the keeper's next pass, or its expiry is not known), by one compare-and-set
        on the run through the store's group commit — a hand-on's (``handed_on``) run was
        made without a reservation, one was handed on to it since. None when it did not
        apply (the job or the run is no longer as published): the caller reads and decides."""
        now = self.clock.now()
        if decisions.millis(snapshot.slot - now) > decisions.EARLY_TOLERANCE_MS:
            return None  # early: the run is read, and waits for its slot
        now = self._at_the_slot(snapshot.slot, now)
        # an expiry not known (a leader that predates it) reads as ending now: held first
        reservation = Lease(LeaseScope.JOB, snapshot.job_id, reservation_holder(run_id), snapshot.reserved_token,
                            snapshot.reserved_until or now, run_id)
        lease = self._reservation_to_start(reservation, now)
        if lease is None:
            return None
        start = AttemptStart(number=1, lease=lease, worker=self.worker, started_at=now,
                             lateness_ms=decisions.millis(now - snapshot.slot))
        run_token = None if handed_on else snapshot.reserved_token
        if not self.store.start_reserved_run(run_id, run_token, start, snapshot.revision):
            return None  # the reservation stays the run's: whoever started it, or will, holds it
        attempt = Attempt(run_id=run_id, job_id=snapshot.job_id, number=1, worker=self.worker, lease=lease,
                          handler=snapshot.handler, args=dict(snapshot.args), scheduled_for=snapshot.slot,
                          trigger=Trigger.SCHEDULE, timeout_s=snapshot.timeout_s, max_retries=snapshot.max_retries,
                          started_at=now, job_name=snapshot.name, job_incarnation=snapshot.incarnation,
                          job_revision=snapshot.revision, queued_slot=snapshot.queues_slots)
        self.keeper.track(attempt)
        log.info("run started (token %d)", lease.token, extra=attempt.log_extra())
        return attempt

    def _at_the_slot(self, slot: datetime | None, now: datetime) -> datetime:
        """``now``, or for a slot run delivered before its slot — within
        `decisions.EARLY_TOLERANCE_MS`: the processes' database clocks differ by a few ms —
        the slot itself, once this thread has slept until it. A handler never starts
        before its slot (by the clock its ``started_at`` is read on)."""
        if slot is None or slot <= now:
            return now
        time.sleep((slot - now).total_seconds())
        return max(self.clock.now(), slot)

    def _reservation_to_start(self, reservation: Lease, now: datetime) -> Lease | None:
        """The lease a first attempt starts under: its run's reservation as it stands when
        it outlasts the keeper's next renewal pass (nothing written), else the reservation
        held for a lease from now — also one that expired while nobody took it, as when
        the workers are behind (None when it was taken, released or re-made).

        Holding it is harmless when another delivery wins the start: it only extends the
        lease of the attempt that did (a dead one's recovery waits one lease longer)."""
        if outlasts_renewal(reservation, now, self.lease_s):
            return reservation
        return self.store.hold_reservation(reservation, self.lease_s, now)

    def _try_start(
        self, run_id: str, redelivered: bool, after_attempt: int | None, handed_on: bool = False
    ) -> tuple[Attempt | Decision | None, Run | None, Job | None, datetime]:
        """One round: read, decide, claim, compare-and-set. None = lost a race, read again.
        (``handed_on``: the message is a hand-on, `worker.records.hand_on_message`.)"""
        now = self.clock.now()
        run = self.store.find_run(run_id)
        self.outages.answered(now)
        job = self._job_of(run)
        decision = self._unless_held(decisions.decide(run, job, now, lease_s=self.lease_s, redelivered=redelivered,
                                                      after_attempt=after_attempt), run, now)
        if not isinstance(decision, Start):
            return decision, run, job, now
        assert run is not None and job is not None
        broken = self._cannot_run(run, job, now, after_attempt)
        if broken is not None:
            return broken, run, job, now
        behind = None if handed_on else self._behind_older_slots(run, job, now)
        if behind is not None:
            return behind, run, job, now
        now = self._at_the_slot(decisions.first_attempt_slot(run), now)
        number = run.attempt + 1
        # a run's own reservation that cannot be held was taken, released or re-made: a
        # claim expecting it as read could not apply either, so the refusal is decided now
        reserved = self._own_reservation(run, job)
        lease = self._reservation_to_start(reserved, now) if reserved is not None else \
            self._claim(run, job, number, now)
        if lease is None:
            own_lease = not job.overlap_policy.uses_job_lease
            job = self._job_of(run)
            if own_lease:
                run = self.store.find_run(run_id) or run
            refused = decisions.decide_refused(run, job, now, lease_s=self.lease_s, redelivered=redelivered,
                                               after_attempt=after_attempt)
            return self._unless_held(refused, run, now), run, job, now
        if not self._mark_running(run, lease, number, now, decision):
            if lease.holder != reservation_holder(run.run_id):  # a reservation stays the run's
                self.store.release_lease(lease)
            return None, run, job, now
        attempt = self._attempt(run, job, lease, number, now)
        self.keeper.track(attempt)
        log.info("run started (token %d)", lease.token, extra=attempt.log_extra())
        return attempt, run, job, now

    def _unless_held(self, decision: Decision, run: Run | None, now: datetime) -> Decision:
        """``decision``, or a wait when it would resolve an attempt whose lease may have
        expired only because MongoDB was unreachable (`cronhive.worker.outages`)."""
        return decisions.held_after_outage(decision, run, now, self.outages.holding_until(now), lease_s=self.lease_s)

    def _job_of(self, run: Run | None) -> Job | None:
        """The run's job, if it still exists — the very job the run was created for: one
        re-created with the same id since (another `Job.incarnation`) is not it."""
        job = self.store.find_job(run.job_id) if run is not None else None
        return job if run is not None and run.belongs_to(job) else None

    def _cannot_run(self, run: Run, job: Job, now: datetime, after_attempt: int | None) -> Decision | None:
        """A not-started run whose job cannot run: its document is not a valid job, or its
        handler is not registered here. The rule for a handler missing here (a rolling
        deploy: not every worker has it yet, or any more): if a live worker of this queue
        lists it in its heartbeat, the message waits `HANDLER_ELSEWHERE_WAIT_MS` and is
        delivered again (retries not consumed) until a worker that has it runs it; if none
        does, the run is recorded ``failed`` (``handler_not_found``) at once, without
        retries, and the job is disabled with that reason."""
        if run.status.started:
            return None  # a dead attempt's replacement: the actor records what happens
        if job.invalid_reason is not None:
            reason = f"invalid job document: {job.invalid_reason}"
            return Fail(bounded_error(ErrorType.INVALID_JOB, reason), reason)
        if self.handlers is None or job.handler in self.handlers:
            return None
        queue = self.settings.runs_queue
        if self.store.handler_on_other_workers(job.handler, queue, self.worker, now):
            return Wait(HANDLER_ELSEWHERE_WAIT_MS, after_attempt,
                        f"handler {job.handler!r} is not registered here; left to a worker that has it")
        reason = f"handler {job.handler!r} is not registered on any live worker of queue {queue}"
        return Fail(bounded_error(ErrorType.HANDLER_NOT_FOUND, reason), reason)

    def _behind_older_slots(self, run: Run, job: Job, now: datetime) -> Decision | None:
        """Queued slots run oldest first: ``fire_all`` under ``forbid`` (its slot runs) and
        a backfill under a job lease (``forbid``, ``buffer_one``: its backfill runs). A
        slot run waits while an older one of the same trigger has not started (one
        indexed count, only for such runs). Past `MAX_FIRE_ALL` waiting a fire_all slot
        is skipped; a backfill run never is (a backfill holds at most
        `MAX_BACKFILL_SLOTS` per request; waiting runs further back poll less often).

        A fire_all slot behind older ones is acknowledged, not published again: it starts
        when the lease is handed on to it (`_hand_on`, each run that ends hands it to the
        job's oldest waiting slot), or, where that chain broke, when the reaper publishes
        the queue's head (`cronhive.worker.maintenance.Reaper.restart_stalled_queues`).
        Until 2026-12-07 it looked again every `slot_queue_wait_ms`: in the failover bench
        those looks, and each run's own message coming back after its hand-on had started
        it, were most of the commands per executed run."""
        if run.attempt > 0 or run.scheduled_for is None or not queued_slot(run, job):
            return None
        backfill = run.trigger == Trigger.BACKFILL
        cap = MAX_BACKFILL_SLOTS if backfill else MAX_FIRE_ALL
        older = self.store.older_waiting_slots(job.job_id, run.scheduled_for, cap, run.trigger)
        if older == 0:
            return None
        if older >= cap and not backfill:
            return Skip(bounded_error(ErrorType.OVERLAP, f"more than {MAX_FIRE_ALL} older slots of this fire_all "
                                                         "job wait for its lease"))
        if not backfill:
            return Acknowledge(f"fire_all under forbid: {older} older slot(s) of the job run first; the lease is "
                               "handed on to this one in its turn")
        return Wait(slot_queue_wait_ms(older), None, f"backfill: {older} older slot(s) of the job run first")

    def _attempt(self, run: Run, job: Job, lease: Lease, number: int, now: datetime) -> Attempt:
        return Attempt(
            run_id=run.run_id,
            job_id=job.job_id,
            number=number,
            worker=self.worker,
            lease=lease,
            handler=job.handler,
            args=dict(job.args),
            scheduled_for=run.scheduled_for,
            trigger=run.trigger,
            timeout_s=job.timeout_s,
            max_retries=job.max_retries,
            started_at=now,
            notify=job.notify,
            job_name=job.name,
            previous_status=job.last_run_status,
            job_incarnation=job.incarnation,
            job_revision=job.revision,
            queued_slot=queued_slot(run, job),
        )

    @staticmethod
    def _own_reservation(run: Run, job: Job) -> Lease | None:
        """The job lease as read when it is this not-started run's own reservation
        (``run:<run_id>``) and the run's first attempt may start under it as it stands:
        the run document decides which delivery starts (`cronhive.snapshots`). Not for a
        retry (its attempt takes a lease of its own) nor for ``buffer_one``'s waiting run."""
        lease = job.lease
        if run.attempt != 0 or run.status not in NOT_STARTED or not job.overlap_policy.uses_job_lease:
            return None
        if lease is None or lease.holder != reservation_holder(run.run_id) or job.buffered_run_id == run.run_id:
            return None
        return lease

    def _claim(self, run: Run, job: Job, number: int, now: datetime) -> Lease | None:
        """A new lease for this attempt (a new holder, hence a new fencing token): the
        job's — free, expired, or a retry's reservation (``run:<run_id>`` while the run
        waits out its backoff; a first attempt's live reservation never comes here, see
        `_own_reservation`) — or under ``allow`` the run's own."""
        holder = attempt_holder(self.worker, run.run_id, number)
        mine = (reservation_holder(run.run_id),)
        if not job.overlap_policy.uses_job_lease:
            return self.store.claim_lease(LeaseScope.RUN, run.run_id, holder, self.lease_s, now, run_id=run.run_id,
                                          mine=mine, seen=run)
        return self.store.claim_lease(LeaseScope.JOB, job.job_id, holder, self.lease_s, now, run_id=run.run_id,
                                      mine=mine, seen=job, takes_buffer=job.overlap_policy == OverlapPolicy.BUFFER_ONE)

    def _mark_running(self, run: Run, lease: Lease, number: int, now: datetime, decision: Start) -> bool:
        """queued/pending (or running under a dead lease) → running, by compare-and-set on ``run``."""
        # a backfill's slot is in the past on purpose: its lateness counts from the request
        since = run.created_at if run.trigger == Trigger.BACKFILL else run.scheduled_for
        lateness = decisions.millis(now - since) if since else None
        start = AttemptStart(number=number, lease=lease, worker=self.worker, started_at=now, lateness_ms=lateness)
        dead = None
        if decision.replaces_dead_attempt:
            dead = dead_attempt_record(run, f"attempt {run.attempt} stopped renewing its lease; retried")
        return self.store.start_run_attempt(run, start, dead)

    def _carry_out(self, broker: Broker, message: MessageProxy, decision: Decision,
                   run: Run | None, job: Job | None, now: datetime) -> None:
        """Act on a decision not to start now; always raises `SkipMessage` (the actor is not called)."""
        run_id = message.args[0]
        extra = _run_log(run_id, (run.job_id if run else None) or message.kwargs.get("job_id"), self.worker,
                         attempt=run.attempt if run else None)
        if isinstance(decision, Acknowledge):
            log.info("not running: %s", decision.reason, extra=extra)
        elif isinstance(decision, Wait):
            log.info("waiting %d ms: %s", decision.delay_ms, decision.reason, extra=extra)
            self._publish_later(broker, message, decision.after_attempt, decision.delay_ms)
        elif isinstance(decision, Skip):
            assert run is not None
            notify = notifications_for(job.notify if job else None, NotifyEvent.SKIPPED, job.name if job else None, now)
            if self.store.skip_run(run_id, decision.error, now, notify):
                metrics.WORKER_RUNS.labels(outcome=RunStatus.SKIPPED).inc()
                log.info("run skipped: %s", decision.error.message, extra=extra)
        elif isinstance(decision, Abandon):
            assert run is not None
            abandon_dead_attempt(self.store, run, now, decision.reason, job,
                                 cancelled=decision.cancelled)  # counted there
        elif isinstance(decision, Fail):
            assert run is not None
            self._fail_unstarted(run, decision, now, extra)
        raise SkipMessage(type(decision).__name__)

    def _fail_unstarted(self, run: Run, decision: Fail, now: datetime, extra: dict[str, Any]) -> None:
        """Record a run that cannot run ``failed`` (``last_run_*`` on its job, releasing the
        job lease the run had reserved) and disable its job: one WARNING line each."""
        if not self.store.fail_unstarted_run(run.run_id, decision.error, now):
            return  # another delivery got there first
        metrics.WORKER_RUNS.labels(outcome=RunStatus.FAILED).inc()
        log.warning("run failed without starting: %s: %s", decision.error.type, decision.error.message, extra=extra)
        reservation = None
        if run.lease_token is not None and run.lease_scope != LeaseScope.RUN:
            reservation = Lease(LeaseScope.JOB, run.job_id, reservation_holder(run.run_id), int(run.lease_token),
                                now, run.run_id)
        incarnation = run.job_incarnation
        if not self.store.record_job_outcome(run.job_id, run.run_id, RunStatus.FAILED, None, reservation,
                                             incarnation) and reservation is not None:
            self.store.record_job_outcome(run.job_id, run.run_id, RunStatus.FAILED, None, None, incarnation)
        if self.store.disable_broken_job(run.job_id, decision.disable_reason, now):
            log.warning("job disabled: %s", decision.disable_reason, extra=extra)

    def _start_later(self, broker: Broker, message: MessageProxy) -> None:
        """After an unexpected failure (MongoDB unreachable...): publish the message again,
        delayed, marked to wait for a lease this delivery may have claimed; if even that
        fails, reject it so RabbitMQ dead-letters it rather than losing it."""
        after_attempt = message.options.get(AFTER_ATTEMPT)
        try:
            self._publish_later(broker, message, 0 if after_attempt is None else after_attempt)
        except Exception:
            log.exception("could not publish the run again either; dead-lettering its message",
                          extra=_run_log(message.args[0], message.kwargs.get("job_id"), self.worker))
            message.fail()

    def _publish_later(self, broker: Broker, message: MessageProxy | Message[Any], after_attempt: int | None,
                       delay_ms: int | None = None) -> None:
        """Publish the run's message again (acknowledging this one): with a delay, it waits."""
        follow = follow_up_message(runs_queue_of(q_name(message.queue_name)), message.args[0],
                                   message.kwargs.get("job_id", ""), after_attempt)
        broker.enqueue(follow, delay=delay_ms if delay_ms is not None else int(self.lease_s * 1000 / 3))

    # -- after the actor -----------------------------------------------------------

    def after_process_message(self, broker: Broker, message: MessageProxy, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        attempt = current_attempt()
        if attempt is None or message.actor_name not in RUN_ACTORS:
            return
        set_current_attempt(None)
        self.keeper.forget(attempt)
        try:
            self.finish_kept(broker, message, attempt, exception, result)
        except Exception:
            log.exception("could not record the outcome; the lease expires and the run is retried or abandoned",
                          extra=attempt.log_extra())

    def finish_kept(self, broker: Broker, message: MessageProxy, attempt: Attempt, exception: BaseException | None,
                    result: Any = None) -> str:
        """`finish`, kept through a MongoDB outage: the outcome (with the instant and the
        duration of the attempt's end) is written again every `OUTCOME_RETRY_EVERY_S` until
        MongoDB answers, for up to `OUTCOME_RETRY_S` — instead of leaving the run to the
        reaper, which would record it ``abandoned`` (or run it again). Every write stays
        fenced on the attempt's number and lease token, so it lands only if no newer
        attempt started meanwhile."""
        now, duration_ms = self.clock.now(), attempt.duration_ms()
        deadline = time.monotonic() + OUTCOME_RETRY_S
        waited = False
        while True:
            try:
                status = self.finish(broker, message, attempt, exception, result, now=now, duration_ms=duration_ms)
            except Unavailable:
                self.outages.unreachable()
                if time.monotonic() >= deadline:
                    raise
                if not waited:
                    log.warning("MongoDB is unavailable as the run ends: its outcome is kept and written when it "
                                "returns", extra=attempt.log_extra())
                    waited = True
                time.sleep(OUTCOME_RETRY_EVERY_S)
                continue
            if waited and status != "rejected":  # a rejected write was logged as such
                log.info("outcome written after the MongoDB outage", extra=attempt.log_extra())
            return status

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        attempt = current_attempt()
        set_current_attempt(None)
        if attempt is not None:  # a later middleware skipped a started attempt: let its lease expire
            self.keeper.forget(attempt)
            log.warning("started attempt skipped by another middleware; the reaper resolves it",
                        extra=attempt.log_extra())

    def finish(self, broker: Broker, message: MessageProxy, attempt: Attempt, exception: BaseException | None,
               result: Any = None, *, now: datetime | None = None, duration_ms: int | None = None) -> str:
        """Record how ``attempt`` ended (with its output and log) at ``now`` (default: now);
        returns the status written (or "rejected")."""
        now = self.clock.now() if now is None else now
        duration_ms = attempt.duration_ms() if duration_ms is None else duration_ms
        status, error = classify(exception, attempt.timeout_s)
        # what the handler returned (kept on the attempt by the actor), or what a failed call
        # got back (the http handler's unexpected response)
        returned = (attempt.result if result is None else result) if exception is None else getattr(
            exception, "output", None)
        output = run_output(returned, attempt.capture)
        metrics.WORKER_RUN_DURATION.observe(duration_ms / 1000)
        if status not in (RunStatus.SUCCEEDED, RunStatus.CANCELLED) and attempt.number <= attempt.max_retries:
            return self._retry(broker, message, attempt, status, error, duration_ms, now, output)
        return self._record_final(broker, message, attempt, status, error, duration_ms, now, output)

    def _retry(self, broker: Broker, message: MessageProxy, attempt: Attempt, status: RunStatus,
               error: RunError | None, duration_ms: int, now: datetime, output: RunOutput | None = None) -> str:
        if attempt.retry_delay_ms is None:
            attempt.retry_delay_ms = backoff_ms(attempt.number, self.settings.retry_backoff_ms)
        delay = attempt.retry_delay_ms
        retry_at = now + timedelta(milliseconds=delay)
        # publish first: if the record below is rejected the retry finds a newer attempt and is dropped
        if not attempt.retry_published:
            self._publish_later(broker, message, attempt.number, delay)
            attempt.retry_published = True
        end = AttemptEnd(RunStatus.QUEUED, error, duration_ms=duration_ms, retry_at=retry_at, output=output)
        record = attempt_record(attempt.number, attempt.worker, status, attempt.started_at, now, duration_ms, error)
        if not self.store.finish_run_attempt(attempt.run_id, attempt.number, attempt.token, end, record):
            return log_rejected(attempt, status)
        # the job shows the failed attempt while its retry waits (last_run_*), written before
        # the lease is handed over: the retry cannot start, hence not finish, before that
        self.store.record_job_outcome(attempt.job_id, attempt.run_id, status, duration_ms, None,
                                      attempt.job_incarnation)
        until = retry_at + timedelta(seconds=self.lease_s)
        self.store.hand_over_lease(attempt.lease, reservation_holder(attempt.run_id), until)
        metrics.WORKER_RUNS.labels(outcome=f"{status}_retried").inc()
        log.warning("attempt %s; retry %d of %d in %d ms: %s", status, attempt.number, attempt.max_retries, delay,
                    error.message if error else None, extra=attempt.log_extra())
        return RunStatus.QUEUED

    def _record_final(self, broker: Broker, message: MessageProxy, attempt: Attempt, status: RunStatus,
                      error: RunError | None, duration_ms: int, now: datetime, output: RunOutput | None = None) -> str:
        own_lease = attempt.scope == LeaseScope.RUN
        # the notification outbox is the run itself: its notifications go in the outcome's update
        notify = notifications_for(attempt.notify, outcome_event(status, attempt.previous_status), attempt.job_name,
                                   now)
        end = AttemptEnd(status, error, finished_at=now, duration_ms=duration_ms, releases_run_lease=own_lease,
                         output=output, notifications=notify)
        record = attempt_record(attempt.number, attempt.worker, status, attempt.started_at, now, duration_ms, error)
        job_lease = None if own_lease else attempt.lease
        finish = AttemptFinish(attempt.run_id, attempt.number, attempt.token, end, record)
        job_outcome = JobOutcome(attempt.job_id, attempt.run_id, status, duration_ms, job_lease,
                                 attempt.job_incarnation)
        hands_on = attempt.queued_slot and job_lease is not None
        if self.outcomes is not None and status in WRITTEN_BEHIND and not hands_on:
            self.outcomes.hand(Finished(attempt, finish, job_outcome))
            return status
        if not self.store.finish_run_attempt(attempt.run_id, attempt.number, attempt.token, end, record):
            return log_rejected(attempt, status)
        handed = hands_on and self._hand_lease_on(broker, message, attempt, job_outcome)
        if not handed and not self.store.record_job_outcome(attempt.job_id, attempt.run_id, status, duration_ms,
                                                            job_lease, attempt.job_incarnation) and job_lease:
            log_job_lease_gone(attempt)
        if hands_on and not handed:
            self._hand_on(broker, message, attempt)
        log_outcome(attempt, status, duration_ms, error)
        if status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            message.fail()  # retries spent: RabbitMQ dead-letters the message to <queue>.XQ
        self._trim_history(attempt)
        return status

    def _trim_history(self, attempt: Attempt) -> None:
        """After a run's outcome is written: trim its job's run history when due (best effort)."""
        try:
            self.history.after_finish(attempt.job_id)
        except Exception:
            log.warning("could not trim the run history", exc_info=True, extra=attempt.log_extra())

    def _hand_lease_on(self, broker: Broker, message: MessageProxy, attempt: Attempt, outcome: JobOutcome) -> bool:
        """A fire_all slot's end: the job's outcome written with its lease made the
        reservation of the job's oldest waiting slot (`JobStore.hand_on_recording`), and
        the hand-on published with the job's snapshot as this attempt started from it,
        so the next slot starts in one write — its run and its job are not read, its
        lease not claimed. False (nothing written) when there is no waiting slot, no
        snapshot to give (a job with ``notify``, a backfill), or the write did not apply:
        the outcome is then written with the lease freed and `_hand_on` publishes."""
        if attempt.trigger != Trigger.SCHEDULE or attempt.notify is not None or attempt.job_name is None:
            return False
        try:
            waiting = self.store.oldest_waiting_slot(attempt.job_id, attempt.trigger)
            if waiting is None:
                return False
            until = self.clock.now() + timedelta(seconds=self.lease_s)
            reservation = self.store.hand_on_recording(outcome, waiting.run_id, until)
        except Unavailable:
            raise  # the outcome is kept and written again (`finish_kept`)
        except Exception:
            log.warning("could not hand the lease on with the job's snapshot; freeing it", exc_info=True,
                        extra=attempt.log_extra())
            return False
        if reservation is None:
            return False
        snapshot = JobSnapshot(job_id=attempt.job_id, name=attempt.job_name, handler=attempt.handler,
                               args=dict(attempt.args), timeout_s=attempt.timeout_s, max_retries=attempt.max_retries,
                               revision=attempt.job_revision, incarnation=attempt.job_incarnation,
                               reserved_token=reservation.token, slot=waiting.slot, reserved_until=until,
                               queues_slots=True)
        try:
            broker.enqueue(hand_on_message(runs_queue_of(q_name(message.queue_name)), waiting.run_id,
                                           attempt.job_id, snapshot))
        except Exception:  # its reservation expires, and the reaper publishes the queue's head
            log.warning("could not publish the hand-on; the next slot starts when its reservation expires",
                        exc_info=True, extra=attempt.log_extra())
        return True

    def _hand_on(self, broker: Broker, message: MessageProxy, attempt: Attempt) -> None:
        """The lease is free: publish the job's oldest waiting slot run of the same trigger
        now (its own message sleeps until its next look; whichever comes first starts
        it, the other is acknowledged), so queued slots follow each other without waiting
        out a poll. Best effort: the poll is the fallback."""
        try:
            next_run = self.store.oldest_waiting_slot(attempt.job_id, attempt.trigger)
            if next_run is not None:
                broker.enqueue(hand_on_message(runs_queue_of(q_name(message.queue_name)), next_run.run_id,
                                               attempt.job_id))
        except Exception:
            log.warning("could not hand the lease on to the next waiting slot; it polls", exc_info=True,
                        extra=attempt.log_extra())

