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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dramatiq import Broker
from dramatiq.middleware import Middleware

from cronhive.clock import Clock
from cronhive.domain import Run
from cronhive.enums import LeaseScope
from cronhive.errors import Unavailable
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

#: publish(run, after_attempt): re-publish a run whose attempt ``after_attempt`` died.
Republish = Callable[[Run, int], None]


@dataclass
class ReapReport:
    recovered: list[str]
    abandoned: list[str]


class Reaper:
    """The reaper and retention sweeper of one worker process."""

    def __init__(self, store: WorkerStore, clock: Clock, settings: Settings, republish: Republish, worker: str,
                 outages: StoreOutages | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.republish = republish
        self.worker = worker
        self.interval_s = max(1.0, settings.job_lease_s / 3)
        self.lease_s = max(3.0, self.interval_s * 3)
        self._last_sweep: float | None = None
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
