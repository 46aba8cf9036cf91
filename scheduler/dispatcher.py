"""The leader's work: turn due slots into runs on RabbitMQ, exactly once per slot.

One `Dispatcher.run_pass` (leader only) does, in this order:

1. **Re-publish the backlog** when there may be one (just elected, a publish
   failed, and every `BACKLOG_SCAN_S` as a safety net): the ``pending`` runs,
   oldest first (index "by_status"). A pending slot run whose job already moved
   past its slot was *committed* and is published (it was never confirmed: its
   leader died, or RabbitMQ was down); one whose job still waits for that slot is
   a *draft* of a leader that died mid-pass and is deleted (the slot is still due
   and is planned again); one whose job is gone is recorded ``skipped``. A manual
   run still ``pending`` `MANUAL_PENDING_S` after its creation (the API died or
   lost MongoDB around its publish) is published too.
2. **Publish the runs planned ahead** whose instant has come (`Planned`), after one
   read of their jobs and of the maintenance windows: a run whose job was deleted or
   re-created, disabled, changed since it was planned, or whose slot a window now
   holds is *withdrawn* instead — deleted, the reservation freed, the job moved back
   to the slot, so the slot is planned again at once by the job as it is now (or, for
   a disabled job, kept as its next slot, as if it had never been planned).
3. **Dispatch due jobs**, a batch at a time — up to ``SCHEDULER_BATCH`` jobs and
   about as many runs (a catch-up can give one job up to 101) — earliest
   ``due_at`` first (index "due"):

   a. plan each job's slots (`cronhive.slots.plan_slots`: misfire policy, next
      slot, jitter, the maintenance windows — read once per batch, those overlapping
      the earliest slot waited for up to now — whose slots are recorded ``skipped``)
      and decide overlap (`scheduler.overlap.resolve`); a job whose schedule cannot
      be computed, or whose document is not a valid job (`Job.invalid_reason`), is
      disabled with a reason (one WARNING line) and never fired;
   b. insert every slot's run in one unordered ``insert_many`` — ``pending`` to
      publish, ``skipped`` for misfire/overlap — with deterministic ids
      (`cronhive.slots.slot_run_id`) so a slot keeps its run across failover; a
      slot whose run exists already (a dead leader's draft) is adopted;
   c. commit: one ``bulk_write`` of compare-and-set job updates (next slot,
      ``due_at``, ``last_triggered_at``, the lease reservation), fenced on the
      term; jobs whose update is identical (a herd on one schedule) share one
      ``UpdateMany``. Jobs whose write did not apply (changed meanwhile) get their drafts
      deleted and are planned again on the next pass;
   d. publish the committed ``pending`` runs in slot order (each slot run with its
      job's snapshot, `cronhive.snapshots`), up to `PUBLISH_CHUNK`
      in flight at once with pipelined confirms (`cronhive.broker.RunPublisher.publish_runs`),
      checking leadership before each chunk;
   e. mark the confirmed runs ``queued`` in one ``update_many`` (``queued_at``:
      when the last confirm of the pass came) — `QUEUED_MARK_DELAY_S` later, and only
      those still ``pending`` then: a run its worker started meanwhile needs no mark
      (its start wrote it), so a run started within the delay costs no write for it.
      Every mark still due is written before a backlog pass (which would publish an
      unmarked run again) and when the leader stops on purpose.

   A job due within the lookahead (``SCHEDULER_LOOKAHEAD_MS``) is planned the same
   way *before* its instant — its run written ``pending``, the job advanced, its lease
   reserved until a lease after the slot — and held (step 2) instead of published:
   at the instant only publishing remains. A crowd of jobs due together (a herd on one
   slot) is planned further ahead (`Dispatcher.plan_from`: by twice the time planning
   it is measured to take), so its planning too ends before the instant. Only a
   valid, enabled job whose lease could be reserved now is planned ahead; one whose
   lease a run still holds is decided at its instant. A new leader holds the pending
   runs of slots still ahead that the previous one committed (its backlog pass) and
   publishes them at their slot; a leader that stops on purpose withdraws what it
   planned (`Dispatcher.withdraw_planned`). Slots planned before a MongoDB outage and
   due during it are committed: they are published when it ends (those after are
   decided by the misfire policy).

   So a dispatched batch costs six MongoDB commands whatever its size (plus
   one per adopted draft after a failover); the documents written per fired run
   are its insert, its share of the job update and — unless it started within
   `QUEUED_MARK_DELAY_S` of its confirm — its ``queued`` mark.

RabbitMQ unreachable: runs stay ``pending`` (committed), one log line says so,
new slots keep being committed as ``pending`` behind them, and publishing is
retried with backoff (0.5 s doubling to 5 s) — in order, backlog first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import takewhile

from cronhive.broker import RunPublisher
from cronhive.clock import Clock
from cronhive.domain import Job, Run, RunError, new_run, notifications_for
from cronhive.enums import ErrorType, NotifyEvent, RunStatus, Trigger
from cronhive.errors import BrokerUnavailable
from cronhive.scheduler import overlap
from cronhive.scheduler.metrics import SchedulerMetrics
from cronhive.settings import redact_url
from cronhive.slots import JobAdvance, SlotPlan, SlotRun, UncomputableSchedule, plan_slots, slot_run_id
from cronhive.snapshots import JobSnapshot, snapshot_for
from cronhive.store.protocols import SchedulerStore
from cronhive.windows import MaintenanceWindow, window_holding, windows_of

log = logging.getLogger("cronhive.scheduler.dispatch")

BROKER_BACKOFF_MIN_S = 0.5
BROKER_BACKOFF_MAX_S = 5.0
#: Look for unpublished runs this often even when nothing failed here.
BACKLOG_SCAN_S = 30.0
#: Runs in flight at once when publishing (one confirm-mode channel; leadership is
#: checked before each chunk).
PUBLISH_CHUNK = 500
#: A manual run pending this long is no longer being published by the API.
MANUAL_PENDING_S = 60.0
#: Confirmed runs are marked ``queued`` this long after their confirm, those still
#: ``pending`` then (module docstring, step e). On the embedded store the mark is an
#: update of the run, as dear as its start: written at once, a herd's marks took the
#: store as long as its starts, right when the starts were due. Delayed, the mark of a
#: run started meanwhile matches nothing and writes nothing; the cost is that a leader
#: that dies leaves up to this long of confirmed runs unmarked, which the next one
#: publishes again (a second message of a run: its worker finds it started, or starts
#: it once).
QUEUED_MARK_DELAY_S = 5.0

#: Returns the leader's term, or raises `scheduler.leadership.LeadershipLost`.
Guard = Callable[[datetime], int]


@dataclass(frozen=True)
class Outgoing:
    """A committed run to publish."""

    run_id: str
    job_id: str
    slot: datetime
    scheduled: bool  # a slot run (its lateness is measured), or a manual one
    #: the job as committed, for the worker to start the run without reading (`cronhive.snapshots`)
    snapshot: JobSnapshot | None = None
    #: a fire_all slot run behind an older one of its job not started (`Dispatcher._outgoing`):
    #: the worker acknowledges its message unread (`cronhive.broker.BEHIND_OPTION`)
    behind: bool = False


@dataclass(frozen=True)
class Planned:
    """A committed slot run planned ahead of its instant: published at ``due`` (its
    slot, plus the job's jitter), once its job is checked to be still as planned;
    withdrawn otherwise (`Dispatcher._check_planned`)."""

    item: Outgoing
    due: datetime
    #: the job's revision and incarnation when planned (revision None: held from the
    #: backlog, planned by an earlier leader — not compared)
    revision: int | None
    incarnation: str | None
    #: ``next_fire_at`` the plan's advance wrote (None: not known)
    advanced_to: datetime | None
    fires_counted: int = 0


@dataclass(frozen=True)
class Confirmed:
    """Runs RabbitMQ confirmed together, to mark ``queued`` (`Dispatcher._write_marks`)."""

    at: datetime  # when the last of their confirms came: their ``queued_at``
    run_ids: list[str]


@dataclass
class PassResult:
    """What a pass did, and whether more is due right away."""

    planned: int = 0
    fired: int = 0
    skipped: int = 0
    published: int = 0
    changed: int = 0  # jobs whose advance did not apply (changed meanwhile)
    more: bool = False
    lateness_ms: list[float] = field(default_factory=list)


@dataclass
class _Batch:
    """One pass's plan: each advancing job's slot runs (due order), the job writes and
    each job's missed-slot count."""

    runs_by_job: dict[str, list[SlotRun]] = field(default_factory=dict)
    advances: list[JobAdvance] = field(default_factory=list)
    missed: dict[str, int] = field(default_factory=dict)
    #: jobs planned ahead of their instant (lookahead): their ``due_at`` as read
    ahead: dict[str, datetime] = field(default_factory=dict)
    #: fire_all jobs whose new slots queue behind older slot runs not started (`_queued_behind`)
    queued_behind: set[str] = field(default_factory=set)


#: Seconds the leader takes to plan one job ahead before it has measured it (a herd of
#: 1,000 jobs took 2.5 s to over 10 s on the embedded store, as the machine's speed
#: varied; planning early costs only a reservation held longer); then the measured
#: cost (`plan_cost_s`).
DEFAULT_PLAN_COST_S = 0.01
#: The planning horizon stretches by this many times the estimated time to plan a crowd.
CROWD_MARGIN = 2.0
#: A stretch shorter than this is not made (a few jobs plan within the lookahead).
MIN_STRETCH_S = 0.5
#: The furthest ahead a crowd is planned, and the most jobs counted to decide it.
MAX_HORIZON_S = 60.0
MAX_CROWD = 100_000
#: Weight of the latest measure in the planning cost's moving average; the fewest jobs
#: a measured batch has.
PLAN_COST_WEIGHT = 0.3
PLAN_COST_MIN_JOBS = 20

#: Job ids named by the one line that logs a pass's skipped slots.
SKIPPED_JOBS_LOGGED = 5


def log_skipped(skipped: dict[str, list[str]], term: int) -> None:
    """One line for every slot a pass recorded ``skipped`` (each run says why): the
    count by reason and the first few jobs — not a line per slot, which an overloaded
    cluster would write thousands of times a minute."""
    total = sum(len(jobs) for jobs in skipped.values())
    reasons = ", ".join(f"{why} {len(jobs)}" for why, jobs in sorted(skipped.items()))
    jobs = list(dict.fromkeys(job for ids in skipped.values() for job in ids))
    named = ", ".join(jobs[:SKIPPED_JOBS_LOGGED]) + (f" and {len(jobs) - SKIPPED_JOBS_LOGGED} more"
                                                      if len(jobs) > SKIPPED_JOBS_LOGGED else "")
    log.info("%d slot(s) recorded skipped (%s) of job(s) %s", total, reasons, named,
             extra={"term": term, "job_ids": jobs[:SKIPPED_JOBS_LOGGED],
                    "counts": {why: len(ids) for why, ids in skipped.items()},
                    "job_id": jobs[0] if len(jobs) == 1 else None})


class Dispatcher:
    """Creates, commits and publishes slot runs for the leader (see the module docstring)."""

    def __init__(self, store: SchedulerStore, publisher: RunPublisher, clock: Clock, guard: Guard, *,
                 job_lease_s: float, batch: int, metrics: SchedulerMetrics | None = None,
                 publish_chunk: int = PUBLISH_CHUNK, lookahead_s: float = 0.0,
                 mark_delay_s: float = QUEUED_MARK_DELAY_S) -> None:
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.guard = guard
        self.job_lease_s = job_lease_s
        self.batch = batch
        self.publish_chunk = max(1, publish_chunk)
        self.metrics = metrics or SchedulerMetrics()
        self.backlog = True  # there may be unpublished runs: look before publishing new ones
        #: confirmed by RabbitMQ, not yet marked queued (confirm order)
        self.unmarked: list[Confirmed] = []
        self.mark_delay = timedelta(seconds=max(0.0, mark_delay_s))
        self.broker_down = False
        self._broker_backoff = BROKER_BACKOFF_MIN_S
        self._broker_retry_at = 0.0  # time.monotonic()
        self._seq = 0
        self._next_scan = 0.0  # time.monotonic() of the next safety-net backlog scan
        #: how far ahead of their instant slots are planned (0: at their instant) ...
        self.lookahead = timedelta(seconds=max(0.0, lookahead_s))
        #: ... at least: a crowd of jobs due together is planned further ahead (`plan_from`)
        self.horizon = self.lookahead
        #: seconds one job takes to plan ahead (a moving average of the passes measured)
        self.plan_cost_s = DEFAULT_PLAN_COST_S
        #: runs planned ahead, committed and pending, published at their instant (due order)
        self.planned: list[Planned] = []

    # -- leadership changes -----------------------------------------------------

    def take_over(self) -> None:
        """Just elected: an earlier leader may have left unpublished runs or drafts. Runs
        this process saw confirmed but could not mark ``queued`` (MongoDB went away as
        they were confirmed: the usual way leadership lapses) stay to be marked first,
        so its backlog pass does not publish them again."""
        self.backlog = True
        self.planned.clear()  # the backlog pass finds them again, pending in the store

    def step_down(self) -> None:
        """No longer leader: forget what the next leader will redo — except the confirmed
        runs still to mark ``queued``, a fact whoever leads next may use (this process,
        re-elected: `take_over`; marking a run another leader published again, or
        started, changes nothing)."""
        self.planned.clear()
        self.metrics.unpublished(0)  # the backlog is the next leader's now

    # -- one pass ----------------------------------------------------------------

    def run_pass(self) -> PassResult:
        """Backlog, then one batch of due jobs. ``result.more``: come back at once."""
        result = PassResult()
        if time.monotonic() >= self._next_scan:
            self.backlog = True
        self._write_marks(every=self.backlog)  # a backlog pass would publish an unmarked run again
        if self.backlog and self._broker_ready():
            self._flush_backlog(result)
        now = self.clock.now()
        try:
            self._publish_planned(now, result)
        except Exception:  # interrupted: the runs it took are committed and pending, the backlog's now
            self.backlog = True
            raise
        jobs = self.store.due_jobs(now + self.horizon, self.batch)
        planned_before = len(self.planned)
        if jobs:
            began = time.monotonic()
            try:
                self._dispatch(jobs, now, result)
            except Exception:  # interrupted (MongoDB, leadership): committed runs may wait unpublished
                self.backlog = True
                raise
            self._measure_plan_cost(len(self.planned) - planned_before, time.monotonic() - began)
        # a full batch: come back at once — unless it held only jobs due later that could
        # not be planned ahead (their lease is held): those wait for their instant
        due_now = any(job.due_at is not None and job.due_at <= now for job in jobs)
        result.more = result.more or (len(jobs) >= self.batch and (due_now or len(self.planned) > planned_before))
        return result

    def wake_at(self) -> datetime | None:
        """When the earliest run planned ahead is due (None: none is)."""
        return min((planned.due for planned in self.planned), default=None)

    def plan_from(self, due: datetime) -> datetime:
        """When to start planning the jobs due from ``due`` (the earliest ``due_at``): the
        lookahead before it — or earlier for a crowd, so that planning ends before the
        instant. The jobs due by ``due`` + the lookahead are counted; when planning them
        would take more than `MIN_STRETCH_S` at the measured cost per job, the horizon
        stretches by `CROWD_MARGIN` times that (at most `MAX_HORIZON_S`); the passes that
        follow take jobs due within the stretched horizon. A lookahead of 0 never stretches."""
        stretch = 0.0
        if self.lookahead:
            crowd = self.store.count_due_by(due + self.lookahead, MAX_CROWD)
            stretch = crowd * self.plan_cost_s * CROWD_MARGIN
            if stretch < MIN_STRETCH_S:
                stretch = 0.0
        self.horizon = min(self.lookahead + timedelta(seconds=stretch), self.max_horizon)
        return due - self.horizon

    @property
    def max_horizon(self) -> timedelta:
        """The furthest a crowd's horizon stretches (`plan_from`): `MAX_HORIZON_S`, or the
        lookahead when that is longer."""
        return max(self.lookahead, timedelta(seconds=MAX_HORIZON_S))

    def _measure_plan_cost(self, planned_ahead: int, elapsed_s: float) -> None:
        """Fold one pass's time per job planned ahead into `plan_cost_s` (a pass that
        planned fewer than `PLAN_COST_MIN_JOBS` ahead is not a measure)."""
        if planned_ahead < PLAN_COST_MIN_JOBS:
            return
        measured = elapsed_s / planned_ahead
        self.plan_cost_s += PLAN_COST_WEIGHT * (measured - self.plan_cost_s)

    def _dispatch(self, jobs: list[Job], now: datetime, result: PassResult) -> None:
        """Plan, insert and commit one batch of due jobs, then publish what was committed."""
        batch = self._plan(jobs, now, result)
        if not batch.advances:
            return
        applied, taken, term = self._commit(batch, {job.job_id: job for job in jobs}, now, result)
        outgoing = self._outgoing(batch, jobs, applied, taken, term, result)
        if self.backlog or not self._broker_ready():
            self.backlog = True  # behind older unpublished runs: published in order by the backlog pass
            return
        self._publish(outgoing, result)

    def _plan(self, jobs: list[Job], now: datetime, result: PassResult) -> _Batch:
        """Each job's slot runs and advance (step a); uncomputable jobs are disabled. At most
        about ``batch`` runs: the rest stay due (``result.more``)."""
        batch = _Batch()
        planned_runs = 0
        windows = self._windows(jobs, now)
        plans: list[tuple[Job, SlotPlan, datetime | None]] = []
        for job in jobs:
            if planned_runs >= self.batch:  # bound every write of the pass; the rest stay due
                result.more = True
                break
            if job.invalid_reason is not None:  # never fired: disabled, with the reason
                if not self._disable(job, f"invalid job document: {job.invalid_reason}", now):
                    result.changed += 1
                continue
            ahead_due = job.due_at if job.due_at is not None and job.due_at > now else None
            if ahead_due is not None and not self._plannable_ahead(job, now):
                continue  # planned at its instant instead
            try:
                plan = plan_slots(job, ahead_due or now, windows)
            except UncomputableSchedule as exc:
                if not self._disable(job, exc.message, now):
                    result.changed += 1  # changed meanwhile: planned again next pass
                continue
            if not plan.advance:
                continue
            plans.append((job, plan, ahead_due))
            planned_runs += len(plan.fire) + len(plan.skipped)  # a run per slot
        behind = batch.queued_behind = self._queued_behind([(job, plan) for job, plan, _ in plans], now)
        for job, plan, ahead_due in plans:
            batch.missed[job.job_id] = plan.missed
            lease_s = self.job_lease_s
            if ahead_due is not None:  # the reservation lasts from now until a lease after the slot
                batch.ahead[job.job_id] = ahead_due
                lease_s += (ahead_due - now).total_seconds()
            runs, advance = overlap.resolve(job, plan, now, lease_s, queued_behind=job.job_id in behind)
            batch.runs_by_job[job.job_id] = runs
            batch.advances.append(advance)
        return batch

    def _queued_behind(self, plans: list[tuple[Job, SlotPlan]], now: datetime) -> set[str]:
        """The fire_all jobs under ``forbid`` whose first fired slot could reserve the lease
        but whose older slot runs have not started yet (a backlog): their new slots queue
        behind those, none reserving it (`scheduler.overlap`). One read for them all;
        none when no such job fires."""
        first_slots = {job.job_id: plan.fire[0] for job, plan in plans if job.queues_slots and plan.fire and
                       overlap.lease_available(job, (slot_run_id(job.job_id, at) for at in plan.fire), now)}
        if not first_slots:
            return set()
        oldest = self.store.oldest_waiting_slots(sorted(first_slots))
        return {job_id for job_id, first in first_slots.items() if job_id in oldest and oldest[job_id] < first}

    def _plannable_ahead(self, job: Job, now: datetime) -> bool:
        """Whether a job due after ``now`` (inside the lookahead) may be planned now: a
        valid, enabled job whose next slot is known and, under a job lease, whose lease
        could be reserved *now* (a run still holding it may release it before the slot:
        then the slot is decided at its instant, as without lookahead)."""
        if job.invalid_reason is not None or not job.enabled or job.next_fire_at is None:
            return False
        if not job.overlap_policy.uses_job_lease:
            return True
        return overlap.lease_available(job, [slot_run_id(job.job_id, job.next_fire_at)], now)

    def _windows(self, jobs: list[Job], now: datetime) -> list[MaintenanceWindow]:
        """The maintenance windows that may hold a due slot of ``jobs``: one read per pass
        (those overlapping the earliest slot waited for up to ``now`` and the lookahead)."""
        slots = [job.next_fire_at for job in jobs if job.next_fire_at is not None]
        return self.store.windows_between(min(slots), now + self.horizon) if slots else []

    def _commit(self, batch: _Batch, jobs_by_id: dict[str, Job], now: datetime,
                result: PassResult) -> tuple[set[str], set[str], int]:
        """Insert the runs and apply the job advances (steps b, c); withdraw the drafts of
        jobs whose advance did not apply. Returns (jobs applied, runs taken by an earlier
        leader, the term)."""
        term = self.guard(self.clock.now())
        slot_runs = [self._slot_run(jobs_by_id[job_id], run, now, term)
                     for job_id, runs in batch.runs_by_job.items() for run in runs]
        taken = self._insert(slot_runs, term)
        term = self.guard(self.clock.now())
        self._seq += 1
        applied = self.store.advance_jobs(batch.advances, term, f"{term}.{self._seq}.{id(self)}", now)
        withdrawn = [run.run_id for job_id, runs in batch.runs_by_job.items() if job_id not in applied
                     for run in runs if run.run_id not in taken]
        if withdrawn:
            self.guard(self.clock.now())
            self.store.delete_scheduled_drafts(withdrawn, term)
            changed = len(batch.runs_by_job) - len(applied)
            result.changed += changed
            log.info("%d job(s) changed while being dispatched; planned again next pass", changed,
                     extra={"term": term})
        return applied, taken, term

    def _outgoing(self, batch: _Batch, jobs: list[Job], applied: set[str], taken: set[str], term: int,
                  result: PassResult) -> list[Outgoing]:
        """The committed runs to publish, in slot order, with their job's snapshot; counts
        and logs the rest."""
        outgoing: list[Outgoing] = []
        skipped: dict[str, list[str]] = {}
        jobs_by_id = {job.job_id: job for job in jobs}
        advances = {advance.job_id: advance for advance in batch.advances}
        for job_id, runs in batch.runs_by_job.items():  # due order, then slot order (stable sort below)
            if job_id not in applied:
                continue
            self.metrics.missed(batch.missed[job_id])
            job, advance = jobs_by_id[job_id], advances[job_id]
            reservation = advance.reservation
            # an older slot run of the job not started: one read at the pass's start, or an
            # earlier one of this batch (inserted with the run: its end hands the lease on)
            older_waits = job_id in batch.queued_behind
            for run in runs:
                result.planned += 1
                if run.fire and run.run_id not in taken:
                    until = reservation.expires_at if reservation is not None and reservation.run_id == run.run_id \
                        else None
                    snapshot = snapshot_for(job, Trigger.SCHEDULE, run.slot, run.lease_token, until)
                    behind = job.queues_slots and older_waits and snapshot is None
                    older_waits = True
                    item = Outgoing(run.run_id, job_id, run.slot, scheduled=True, snapshot=snapshot, behind=behind)
                    if job_id in batch.ahead:  # published at its instant
                        self._hold(Planned(item, batch.ahead[job_id], job.revision, job.incarnation,
                                           advance.next_fire_at, advance.fired_counted))
                        continue
                    outgoing.append(item)
                    result.fired += 1
                elif not run.fire:
                    result.skipped += 1
                    why = run.skip_type or ErrorType.MISFIRE
                    self.metrics.skipped(why)
                    skipped.setdefault(why, []).append(job_id)
        if skipped:
            log_skipped(skipped, term)
        outgoing.sort(key=lambda item: item.slot)
        return outgoing

    def _insert(self, runs: list[Run], term: int) -> set[str]:
        """Insert the runs; adopt existing drafts. Returns the ids of slots whose run went
        further under an earlier leader (not ours to publish)."""
        taken: set[str] = set()
        for existing in self.store.insert_scheduled_runs(runs):
            self.guard(self.clock.now())
            if not self.store.adopt_scheduled_run(existing, term):
                taken.add(existing.run_id)
        return taken

    @staticmethod
    def _slot_run(job: Job, run: SlotRun, now: datetime, term: int) -> Run:
        """The run a slot gets: ``pending`` (to publish) or ``skipped`` with why, in ``term``."""
        status = RunStatus.PENDING if run.fire else RunStatus.SKIPPED
        covers_from, covers_until = run.covers or (None, None)
        created = replace(new_run(job, run.run_id, Trigger.SCHEDULE, run.slot, now, None, status),
                          lease_token=run.lease_token, sched_term=term, covers_from=covers_from,
                          covers_until=covers_until)
        if run.fire:
            return created
        # a skipped slot's notification rides on its run (the outbox), so a withdrawn draft takes it along
        notify = notifications_for(job.notify, NotifyEvent.SKIPPED, job.name, now)
        return replace(created, error=RunError(run.skip_type or ErrorType.MISFIRE, run.message or ""), finished_at=now,
                       notifications=notify, notify_due=now if notify else None)

    def _disable(self, job: Job, reason: str, now: datetime) -> bool:
        """Disable a job that cannot be planned; False when it changed meanwhile."""
        term = self.guard(self.clock.now())
        if not self.store.disable_job(job.job_id, job.revision, reason, now, term):
            return False
        log.warning("job disabled: %s", reason, extra={"job_id": job.job_id, "term": term})
        return True

    # -- runs planned ahead --------------------------------------------------------

    def _hold(self, planned: Planned) -> None:
        """Keep a committed run to publish at its instant (once, whoever found it)."""
        if any(held.item.run_id == planned.item.run_id for held in self.planned):
            return
        self.planned.append(planned)
        self.planned.sort(key=lambda held: held.due)

    def _publish_planned(self, now: datetime, result: PassResult) -> None:
        """Publish the runs planned ahead whose instant has come, those whose job is still
        as planned; withdraw the others. Behind unpublished older runs (or while RabbitMQ
        is away) they are left to the backlog pass, which publishes in order."""
        due = [held for held in self.planned if held.due <= now]
        if not due:
            return
        self.planned = [held for held in self.planned if held.due > now]
        if self.backlog or not self._broker_ready():
            self.backlog = True
            return
        keep = self._check_planned(due, now)
        result.fired += len(keep)
        self._publish([held.item for held in keep], result)

    def _check_planned(self, due: list[Planned], now: datetime) -> list[Planned]:
        """The planned runs to publish now; the others are withdrawn
        (`SchedulerStore.withdraw_planned_run`): their job was deleted or re-created,
        disabled, changed since it was planned (the slot is then planned again at once,
        by the job as it is now), or a maintenance window now holds the slot (recorded
        ``skipped`` when planned again). Reads the jobs (`cronhive.store.base.ID_CHUNK` at a
        time) and the windows."""
        jobs = self.store.jobs_by_id(sorted({held.item.job_id for held in due}))
        slots = [held.item.slot for held in due]
        windows = self.store.windows_between(min(slots), max(slots))
        keep: list[Planned] = []
        withdrawn: list[str] = []
        for held in due:
            job = jobs.get(held.item.job_id)
            if job is not None and job.incarnation == held.incarnation and job.enabled \
                    and job.invalid_reason is None and held.revision in (None, job.revision) \
                    and window_holding(held.item.slot, windows_of(job, windows)) is None:
                keep.append(held)
                continue
            self._withdraw(held, job, self.guard(self.clock.now()))
            withdrawn.append(held.item.job_id)
        if withdrawn:
            log.info("%d run(s) planned ahead withdrawn before their slot (job changed, disabled, deleted or in "
                     "a maintenance window)", len(withdrawn), extra={"job_ids": withdrawn[:SKIPPED_JOBS_LOGGED]})
        return keep

    def _withdraw(self, held: Planned, job: Job | None, term: int) -> None:
        """Withdraw one planned run: deleted, and its job moved back to the slot — unless
        the job is gone (its runs went with it) or a changed schedule moved it itself."""
        if job is None or job.incarnation != held.incarnation:
            self.store.withdraw_planned_run(held.item.run_id, held.item.job_id, held.item.slot, term)
            return
        moved = held.advanced_to is not None and job.next_fire_at != held.advanced_to
        self.store.withdraw_planned_run(held.item.run_id, job.job_id, held.item.slot, term,
                                        move_back=None if moved else job, fires_counted=held.fires_counted)

    def withdraw_planned(self) -> int:
        """Stepping down on purpose (the process stops): withdraw every run planned ahead
        and not yet published, so the next leader plans those slots itself, with the jobs
        as they are then (a leader that dies leaves them to the next one, which publishes
        them at their slot). Returns how many were withdrawn."""
        held, self.planned = self.planned, []
        self._write_marks(every=True)  # or the next leader publishes them again
        if not held:
            return 0
        term = self.guard(self.clock.now())
        jobs = self.store.jobs_by_id(sorted({planned.item.job_id for planned in held}))
        for planned in held:
            self._withdraw(planned, jobs.get(planned.item.job_id), term)
        log.info("%d run(s) planned ahead withdrawn on stepping down", len(held), extra={"term": term})
        return len(held)

    # -- publishing --------------------------------------------------------------

    def _publish(self, outgoing: list[Outgoing], result: PassResult) -> bool:
        """Publish in order, `publish_chunk` runs in flight at a time (leadership checked
        before each chunk), and mark the confirmed ``queued``; stop at the first chunk
        not wholly confirmed (what was not stays pending: the backlog pass publishes it
        again, oldest first). Returns whether everything was published."""
        confirmed: list[str] = []
        last_confirm: datetime | None = None  # when the latest confirm of this publish came
        complete = False
        try:
            for start in range(0, len(outgoing), self.publish_chunk):
                chunk = outgoing[start:start + self.publish_chunk]
                self.guard(self.clock.now())
                snapshots = {item.run_id: item.snapshot for item in chunk if item.snapshot is not None}
                behind = {item.run_id for item in chunk if item.behind}
                published = self.publisher.publish_runs([(item.run_id, item.job_id) for item in chunk],
                                                        snapshots=snapshots, behind=behind)
                last_confirm = self._note_confirmed(chunk, set(published.confirmed), confirmed, result) or last_confirm
                if published.failure is not None:
                    raise published.failure
            complete = True
            self._broker_ok()
        except BrokerUnavailable as exc:
            self._broker_failed(exc, len(outgoing) - len(confirmed))
        finally:
            result.published += len(confirmed)
            if confirmed:
                assert last_confirm is not None  # a chunk with confirms noted its instant
                self.unmarked.append(Confirmed(last_confirm, confirmed))
        self._write_marks()
        return complete

    def _note_confirmed(self, chunk: list[Outgoing], acked: set[str], confirmed: list[str],
                        result: PassResult) -> datetime | None:
        """Collect a chunk's confirmed runs (in order) and their publish lateness; returns
        when the confirms came (None: none did)."""
        if not acked:
            return None
        at = self.clock.now()
        for item in chunk:
            if item.run_id not in acked:
                continue
            confirmed.append(item.run_id)
            if item.scheduled:
                lateness = (at - item.slot).total_seconds() * 1000.0
                result.lateness_ms.append(lateness)
                self.metrics.published(lateness)
        return at

    def _write_marks(self, *, every: bool = False) -> None:
        """Mark ``queued`` the confirmed runs still ``pending`` whose confirm is
        `QUEUED_MARK_DELAY_S` old (``every``: all of them), a command per confirmed
        batch (``queued_at``: when its last confirm came). A batch not written (MongoDB
        or leadership lost) stays, to be written first when this process leads again."""
        if not self.unmarked:
            return
        now = self.clock.now()
        due = list(self.unmarked) if every else list(takewhile(lambda batch: batch.at + self.mark_delay <= now,
                                                         self.unmarked))
        if not due:
            return
        term = self.guard(now)
        for batch in due:
            self.store.mark_runs_queued(batch.run_ids, batch.at, term)
            self.unmarked.pop(0)

    def _flush_backlog(self, result: PassResult) -> None:
        """Publish committed pending runs oldest first, delete drafts, until none is left
        or RabbitMQ fails (then the backlog stays for the next pass)."""
        previous: set[str] = set()
        total = 0
        while True:
            page = self.store.pending_runs(self.batch)
            ids = {run.run_id for run in page}
            if not page or ids == previous:  # nothing left, or nothing movable now
                break
            previous = ids
            committed, drafts, orphans = self._classify(page, self.clock.now())
            term = self.guard(self.clock.now())
            if drafts:
                self.store.delete_scheduled_drafts(drafts, term)
            if orphans:
                error = RunError(ErrorType.JOB_DELETED, "the job was deleted before this run was published")
                self.store.skip_pending_runs(orphans, error, self.clock.now(), term)
            published = self._publish(committed, result)
            self._write_marks(every=True)  # the next page is read by status: not these again
            if not published:
                self.metrics.unpublished(self.store.count_pending_runs(self.clock.now()))
                return
            total += len(committed)
        if total:
            log.info("re-published %d unpublished run(s), oldest first", total)
        self.metrics.unpublished(0)
        self.backlog = False
        self._next_scan = time.monotonic() + BACKLOG_SCAN_S

    def _classify(self, page: list[Run], now: datetime) -> tuple[list[Outgoing], list[str], list[str]]:
        """Pending runs → (to publish, drafts to delete, runs of deleted jobs). A committed
        slot run whose slot is still ahead (planned ahead by an earlier leader) is held,
        to be published at its slot; one held already is left to the held list, even once
        its slot has come while the backlog was being published (else it would go twice)."""
        held = {planned.item.run_id for planned in self.planned}
        page = [run for run in page if run.run_id not in held]
        if not page:
            return [], [], []
        positions = self.store.job_positions(sorted({run.job_id for run in page}))
        young = self.clock.now() - timedelta(seconds=MANUAL_PENDING_S)
        committed: list[Outgoing] = []
        drafts: list[str] = []
        orphans: list[str] = []
        for run in page:
            job_id, slot = run.job_id, run.scheduled_for
            assert slot is not None and run.created_at is not None  # every run is written with both
            if not run.scheduled:
                if run.created_at <= young:
                    committed.append(Outgoing(run.run_id, job_id, slot, scheduled=False))
            elif job_id not in positions:
                orphans.append(run.run_id)
            elif (position := positions[job_id]) is not None and slot >= position:
                drafts.append(run.run_id)
            elif slot > now:
                self._hold(Planned(Outgoing(run.run_id, job_id, slot, scheduled=True), slot, None,
                                   run.job_incarnation, None))
            else:
                committed.append(Outgoing(run.run_id, job_id, slot, scheduled=True))
        return committed, drafts, orphans

    # -- RabbitMQ health ---------------------------------------------------------

    def broker_retry_in(self) -> float | None:
        """Seconds until publishing is retried, when a backlog waits for RabbitMQ."""
        if not self.backlog:
            return None
        return max(0.0, self._broker_retry_at - time.monotonic())

    def _broker_ready(self) -> bool:
        return time.monotonic() >= self._broker_retry_at

    def _broker_failed(self, exc: BrokerUnavailable, left: int) -> None:
        self.backlog = True
        if not self.broker_down:
            log.error("%s; %d run(s) stay pending and are published in order when it returns",
                      exc.message, left, extra={"url": redact_url(self.publisher.url)})
            self.broker_down = True
            self._broker_backoff = BROKER_BACKOFF_MIN_S
        else:
            self._broker_backoff = min(self._broker_backoff * 2, BROKER_BACKOFF_MAX_S)
        self._broker_retry_at = time.monotonic() + self._broker_backoff

    def _broker_ok(self) -> None:
        if self.broker_down:
            log.info("RabbitMQ is reachable again", extra={"url": redact_url(self.publisher.url)})
            self.broker_down = False
            self._broker_backoff = BROKER_BACKOFF_MIN_S
