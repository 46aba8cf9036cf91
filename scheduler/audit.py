"""The leader's slot audit: every `AUDIT_INTERVAL_S`, in a thread beside the
dispatching loop (`cronhive.scheduler.loop`), it counts the slots that became
``missed`` (`cronhive.ledger`: past due plus grace, no run, none standing for them,
no maintenance window holding them) in ``cronhive_slots_missed_total`` — an
alert on it says the schedulers lost slots (or were all down and have not caught
up yet).

Each slot is counted once, across audits and across leaders: a watermark in
MongoDB (``leases``, ``_id`` ``slot_audit``) says up to which instant slots have
been audited. An audit at ``now`` looks, for each job, at the slots ``S`` with
``watermark < S + delay <= now`` where ``delay`` is the job's jitter plus its
misfire grace plus `SETTLE` (so a slot is judged only once it can no longer be
dispatched on time, and every slot falls in exactly one audit's range), then moves
the watermark by compare-and-set: a leader that lost the race drops its count.

Cheap and bounded: at most `AUDIT_SPAN` of the past per audit (after a long gap
the older slots are not audited; the ledger still shows them), enabled jobs read
a page of `AUDIT_PAGE` at a time without ``args``, and per page one read of the
runs in range (index "slot_key" / "covering"); the windows are read once per
page, and a job changed within the range is judged only after its change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from cronhive import ledger
from cronhive.clock import Clock
from cronhive.domain import Job, Run
from cronhive.scheduler.leadership import LeadershipLost
from cronhive.scheduler.metrics import SchedulerMetrics
from cronhive.store.protocols import SchedulerStore

log = logging.getLogger("cronhive.scheduler.audit")

AUDIT_INTERVAL_S = 30.0
#: The most of the past one audit looks at.
AUDIT_SPAN = timedelta(minutes=10)
#: How long after due plus grace a slot without a run counts as missed.
SETTLE = timedelta(seconds=5)
AUDIT_PAGE = 500
#: The most slots of one job one audit looks at.
MAX_SLOTS_PER_JOB = 1000
_TICK = timedelta(microseconds=1)

#: The term this process leads in, or None when it is not the leader.
TermOf = Callable[[], "int | None"]


def delay_of(job: Job) -> timedelta:
    return job.jitter + timedelta(seconds=float(job.misfire_grace_s)) + SETTLE


def judged_range(job: Job, since: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The slots of ``job`` an audit judges: those ``S`` with ``since < S + delay <= now``,
    and only after its last change (its current definition names them)."""
    delay = delay_of(job)
    low = since - delay + _TICK
    if job.updated_at is not None:
        low = max(low, job.updated_at + _TICK)
    return low, now - delay


class SlotAuditor:
    """Counts missed slots for the leader (see the module docstring)."""

    def __init__(self, store: SchedulerStore, clock: Clock, term_of: TermOf, metrics: SchedulerMetrics, *,
                 interval_s: float = AUDIT_INTERVAL_S) -> None:
        self.store = store
        self.clock = clock
        self.term_of = term_of
        self.metrics = metrics
        self.interval_s = interval_s
        self._next = 0.0  # time.monotonic() of the next audit

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def _term(self) -> int:
        term = self.term_of()
        if term is None:
            raise LeadershipLost("the slot audit runs on the leader only")
        return term

    def audit(self) -> int | None:
        """One audit; the number of missed slots it counted (None: another leader's audit
        moved the watermark meanwhile, or this was the first audit, which only sets it).
        Reads the leader's term, never renews the lease: safe off the loop's thread."""
        self._next = time.monotonic() + self.interval_s
        now = self.clock.now()
        term = self._term()
        seen = self.store.audit_watermark()
        if seen is None:
            self.store.advance_audit_watermark(None, now, term)
            return None
        since = max(seen, now - AUDIT_SPAN)
        if since >= now:
            return 0
        missed = self._missed(since, now)
        if not self.store.advance_audit_watermark(seen, now, self._term()):
            return None
        total = sum(len(slots) for slots in missed.values())
        self.metrics.slots_missed(total)
        for job_id, slots in sorted(missed.items())[:20]:
            log.warning("%d slot(s) missed: no run, past due plus grace (first %s)", len(slots),
                        slots[0].isoformat(), extra={"job_id": job_id})
        return total

    def _missed(self, since: datetime, now: datetime) -> dict[str, list[datetime]]:
        """The missed slots of every enabled job judged in ``(since, now]``."""
        missed: dict[str, list[datetime]] = {}
        after: str | None = None
        while True:
            jobs = self.store.audit_jobs(after, AUDIT_PAGE)
            if not jobs:
                return missed
            after = jobs[-1].job_id
            ranges = {job.job_id: judged_range(job, since, now) for job in jobs}
            low = min(span[0] for span in ranges.values())
            high = max(span[1] for span in ranges.values())
            windows = self.store.windows_between(low, high)
            runs: dict[str, list[Run]] = {}
            for run in self.store.ledger_runs_of([job.job_id for job in jobs], low, high,
                                                 len(jobs) * MAX_SLOTS_PER_JOB * 2):
                runs.setdefault(run.job_id, []).append(run)
            for job in jobs:
                job_low, job_high = ranges[job.job_id]
                spans = ledger.spans_of(job)
                slots = ledger.missed_slots(job, spans, runs.get(job.job_id, []), windows, job_low, job_high, now,
                                            MAX_SLOTS_PER_JOB)
                if slots:
                    missed[job.job_id] = slots
            if len(jobs) < AUDIT_PAGE:
                return missed
