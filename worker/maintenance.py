"""Housekeeping every worker process offers and one performs at a time.

A daemon thread in each worker process claims the small ``worker-reaper`` lease
(collection ``leases``); the holder, every few seconds (a third of JOB_LEASE_S,
at least one second):

* **reaps**: a run still ``running`` whose attempt's lease has expired (its
  worker died, stalled, or lost its message) is re-published as a recovery
  message when retries remain (once, and again every `REPUBLISH_AFTER_LEASES`
  lease durations while unresolved) — the next delivery starts a new attempt —
  and is marked ``abandoned`` otherwise. So a run never stays ``running``
  forever even when no redelivery comes. While MongoDB is unreachable and for a
  lease after it answers again, nothing is resolved (`cronhive.worker.outages`): a
  lease that expired while nobody could renew it says nothing of its worker, whose
  finished attempt's outcome is being written again (`RunLifecycle.finish_kept`);
* **restarts stalled queues of slots**: a ``fire_all`` job under ``forbid`` runs its
  slots one after another, each handing the lease on to the next
  (`RunLifecycle._hand_on`), and the message of a slot that found older ones waiting
  is acknowledged, not published again. Where that chain broke — the run holding the
  lease was abandoned, skipped or cancelled, or its hand-on could not be published —
  the job's lease is free while its oldest slot waits: that slot's run is published
  again (a hand-on message), at most once a lease per run; so is every waiting slot of
  a job changed so that its slots no longer queue (nothing hands on to them). Every
  `STALLED_SWEEP_S`, over the `STALLED_SCAN` oldest runs not started (a read of them
  and of their jobs: in a backlog of thousands that is not free);
* **enforces retention by age** (RUN_HISTORY_DAYS) every minute: deletes runs
  created before the cutoff in bounded batches through the ``retention`` index,
  behind the TTL index on the same field (`MongoStore.ensure_run_retention`) in
  case the server runs no TTL monitor.

Retention by count (RUN_HISTORY_LIMIT) is trimmed per job as runs finish
(`worker.middleware.HistoryTrimmer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dramatiq import Broker
from dramatiq.middleware import Middleware

from cronhive.clock import Clock
from cronhive.domain import Job, Run, WaitingSlot
from cronhive.enums import LeaseScope
from cronhive.errors import Unavailable
from cronhive.leases import claimable
from cronhive.settings import Settings
from cronhive.store.protocols import WorkerStore
from cronhive.worker.decisions import attempt_alive, retries_left
from cronhive.worker.outages import StoreOutages
from cronhive.worker.records import abandon_dead_attempt

log = logging.getLogger("cronhive.worker.reaper")

REAPER_LEASE_ID = "worker-reaper"
REAP_BATCH = 200
RETENTION_SWEEP_S = 60.0
RETENTION_BATCH = 1000
RETENTION_MAX_BATCHES = 20
#: A dead attempt's run is re-published again if still unresolved this many leases later.
REPUBLISH_AFTER_LEASES = 10

#: Stalled queues are looked for this often, among this many of the oldest runs not
#: started (`Reaper.restart_stalled_queues`).
STALLED_SWEEP_S = 30.0
STALLED_SCAN = 2000

#: publish(run, after_attempt): re-publish a run whose attempt ``after_attempt`` died.
Republish = Callable[[Run, int], None]
#: hand_on(run_id, job_id): publish a hand-on message for the head of a job's queue of slots.
HandOn = Callable[[str, str], None]


@dataclass
class ReapReport:
    recovered: list[str]
    abandoned: list[str]
    restarted: list[str] = field(default_factory=list)


def stalled_slots(job: Job | None, waiting: list[WaitingSlot], now: datetime) -> list[str]:
    """Of a job's slot runs not started (oldest first), those nothing will publish again
    (`Reaper.restart_stalled_queues`): the head of a queue of slots whose lease is free
    or expired; every one, once the job no longer queues its slots and was changed after
    they were made (before that, a slot waiting in a backlog still has its message)."""
    if job is None or not waiting:
        return []
    if job.queues_slots:
        return [waiting[0].run_id] if claimable(job.lease, (), now) else []
    changed = job.updated_at
    return [run.run_id for run in waiting if changed is not None and changed > run.created_at]


class Reaper:
    """The reaper and retention sweeper of one worker process."""

    def __init__(self, store: WorkerStore, clock: Clock, settings: Settings, republish: Republish, worker: str,
                 outages: StoreOutages | None = None, hand_on: HandOn | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.republish = republish
        self.hand_on = hand_on
        #: heads of stalled queues this process published, and when (time.monotonic())
        self._restarted: dict[str, float] = {}
        self.worker = worker
        self.interval_s = max(1.0, settings.job_lease_s / 3)
        self.lease_s = max(3.0, self.interval_s * 3)
        self._last_sweep: float | None = None
        self._last_stalled_sweep: float | None = None
        #: what this process saw of MongoDB outages; the grace after the last one logged
        self.outages = outages or StoreOutages(settings.job_lease_s)
        self._grace_logged: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.scheduled_pass()

    def scheduled_pass(self) -> ReapReport | None:
        """One pass of the thread: `run_once`, a failure logged (and MongoDB being
        unreachable, or answering again, noted in `outages`) instead of raised."""
        try:
            return self.run_once(self.clock.now())
        except Unavailable as exc:
            self.outages.unreachable()
            log.warning("reaper pass skipped: %s", exc.message)
        except Exception:
            log.exception("reaper pass failed")
        return None

    def run_once(self, now: datetime) -> ReapReport | None:
        """One pass, if this process holds (or takes) the reaper lease; else None."""
        claimed = self.store.claim_lease(LeaseScope.NAMED, REAPER_LEASE_ID, self.worker, self.lease_s, now)
        self.outages.answered(now)
        if claimed is None:
            return None
        report = self.reap(now)
        if self._last_stalled_sweep is None or time.monotonic() - self._last_stalled_sweep >= STALLED_SWEEP_S:
            self._last_stalled_sweep = time.monotonic()
            report.restarted = self.restart_stalled_queues(now)
        if self._last_sweep is None or time.monotonic() - self._last_sweep >= RETENTION_SWEEP_S:
            self._last_sweep = time.monotonic()
            self.sweep_retention(now)
        return report

    def reap(self, now: datetime) -> ReapReport:
        """Resolve ``running`` runs whose attempt's lease has expired at ``now`` (none
        while MongoDB is unreachable or within a lease of its return, `outages`)."""
        report = ReapReport(recovered=[], abandoned=[])
        holding_until = self.outages.holding_until(now)
        if holding_until is not None:
            if self._grace_logged != holding_until:
                self._grace_logged = holding_until
                log.info("MongoDB answers again: runs whose lease expired are resolved from %s on, a lease after it "
                         "returned (their workers write the outcomes they kept)",
                         holding_until.isoformat(timespec="milliseconds"))
            return report
        runs = self.store.running_runs(REAP_BATCH)
        jobs = self.store.jobs_by_id(sorted({run.job_id for run in runs}))  # a read per 50 jobs, not one each
        for run in runs:
            job = jobs.get(run.job_id)
            job = job if run.belongs_to(job) else None  # re-created since: not this run's job
            if attempt_alive(run, job, now):
                continue
            attempt = run.attempt
            if job is not None and retries_left(run, job):
                again_after = timedelta(seconds=REPUBLISH_AFTER_LEASES * self.settings.job_lease_s)
                if self.store.note_recovery(run.run_id, attempt, run.lease_token, now, again_after):
                    self.republish(run, attempt)
                    report.recovered.append(run.run_id)
                    log.warning("attempt %d stopped renewing its lease; run re-published for a new attempt", attempt,
                                extra={"job_id": run.job_id, "run_id": run.run_id, "worker": run.worker})
            elif abandon_dead_attempt(self.store, run, now,
                                      f"attempt {attempt} (worker {run.worker}) stopped renewing its lease; "
                                      "no retries left (found by the reaper)", job):
                report.abandoned.append(run.run_id)
        return report

    def restart_stalled_queues(self, now: datetime) -> list[str]:
        """Publish again the slots that wait for a hand-on nothing will send (module
        docstring): of a ``fire_all`` job under ``forbid``, its oldest slot not started,
        while the job's lease is free or expired (held, its holder hands it on when it
        ends); of a job whose slots no longer queue — changed since its slots were made —
        every slot not started (their messages may have been acknowledged while they
        queued). Only slots a pass old; a slot this process published is not published
        again for a lease. Two reads (the runs not started, their jobs); the runs
        published returned."""
        if self.hand_on is None:
            return []
        queues = self.store.waiting_slot_queues(now - timedelta(seconds=self.interval_s), STALLED_SCAN)
        again = time.monotonic() - self.settings.job_lease_s
        self._restarted = {run_id: at for run_id, at in self._restarted.items() if at > again}
        if not queues:
            return []
        jobs = self.store.jobs_by_id(sorted(queues))
        restarted: list[str] = []
        for job_id, waiting in queues.items():
            job = jobs.get(job_id)
            for run_id in stalled_slots(job, waiting, now):
                if run_id in self._restarted:
                    continue
                self.hand_on(run_id, job_id)
                self._restarted[run_id] = time.monotonic()
                restarted.append(run_id)
        if restarted:
            log.info("%d waiting slot(s) of queues nothing moved published again", len(restarted),
                     extra={"run_ids": restarted[:5]})
        return restarted

    def sweep_retention(self, now: datetime) -> int:
        """Delete runs created more than RUN_HISTORY_DAYS ago (bounded batches)."""
        cutoff = now - timedelta(days=self.settings.run_history_days)
        deleted = 0
        for _ in range(RETENTION_MAX_BATCHES):
            count = self.store.delete_runs_created_before(cutoff, RETENTION_BATCH)
            deleted += count
            if count < RETENTION_BATCH:
                break
        if deleted:
            log.info("deleted %d runs older than %d days", deleted, self.settings.run_history_days)
        return deleted


class Maintenance(Middleware):
    """Runs the `Reaper` thread for the life of the worker process."""

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.reaper.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.reaper.stop()
