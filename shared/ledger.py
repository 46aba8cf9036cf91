"""The slot ledger: every slot a job's schedule named in a range, and what became of
it. Pure: the runs, windows and schedule history are passed in, and so is ``now``.

The schedule "as it was at that time" is a list of `ScheduleSpan`\\ s, each the
job's timing fields over ``(start, end]``, built from the job's revisions
(`spans_of`: each revision's definition is in force from its instant to the next
revision's; none while the job is disabled or deleted). A slot's outcome, first match wins:

1. the slot has a run of its own (``trigger`` schedule): the run's status
   (``succeeded``, ``failed``, ``skipped`` …), ``reason`` its error type
   (``misfire``, ``overlap``, ``maintenance`` …);
2. an open maintenance window naming the job held it: ``skipped``, ``maintenance``;
3. a run stands for it (`cronhive.domain.Run.covers_from` … ``covers_until``: a
   ``fire_once`` catch-up run after an outage, a ``skip`` note): ``coalesced``
   into that run, or ``skipped`` with it when that run is a skipped one;
4. not yet due, or due but still within ``jitter + misfire_grace_s``: ``pending``;
5. otherwise ``missed``: past due plus grace and no run — the scheduler was down
   (and has not caught up yet) or lost it.

A scheduled run whose slot the history does not name (the history is coarser
than the truth) is listed too: a run proves its slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cronhive import cron
from cronhive.domain import DEFAULT_TIMEZONE, Job, Run, format_instant, jitter_offset
from cronhive.enums import ErrorType, RunStatus
from cronhive.errors import ValidationError
from cronhive.revisions import Revision
from cronhive.slots import latest_fires
from cronhive.windows import MaintenanceWindow, window_holding, windows_of

#: Most slots one ledger answers.
MAX_LEDGER_SLOTS = 1000
#: Slots the ledger shows when no range is given (the latest up to now).
DEFAULT_LEDGER_SLOTS = 100
COALESCED = "coalesced"
MISSED = "missed"
PENDING = "pending"
_TICK = timedelta(microseconds=1)


class TooManySlots(ValidationError):
    code = "too_many_slots"


@dataclass(frozen=True)
class ScheduleSpan:
    """The job's timing over ``(start, end]`` (``end`` None: still in force; ``start``
    None: from the beginning)."""

    start: datetime | None
    end: datetime | None
    schedule: str
    timezone: str
    jitter: timedelta
    grace: timedelta

    def clip(self, low: datetime, high: datetime) -> tuple[datetime, datetime] | None:
        """``(after, until]`` of this span inside ``[low, high]``, or None when empty."""
        after = max(low - _TICK, self.start) if self.start is not None else low - _TICK
        until = min(high, self.end) if self.end is not None else high
        return (after, until) if after < until else None


def span_of(job: Job, start: datetime | None, end: datetime | None) -> ScheduleSpan:
    return ScheduleSpan(start, end, job.schedule, job.zone, jitter_offset(job.job_id, int(job.jitter_s)),
                        timedelta(seconds=float(job.misfire_grace_s)))


def spans_of(job: Job, history: Sequence[Revision] = ()) -> list[ScheduleSpan]:
    """The job's schedule history: from its revisions (`cronhive.revisions`; each one's
    definition in force from its instant to the next one's, none while disabled or
    deleted); without any (a job older than revisions), its current definition since
    it was created, up to its last change when it is disabled now."""
    if history:
        return spans_from_history(job.job_id, history)
    if not job.enabled:
        return [span_of(job, job.created_at, job.updated_at)] if job.updated_at else []
    return [span_of(job, job.created_at, None)]


def spans_from_history(job_id: str, history: Sequence[Revision]) -> list[ScheduleSpan]:
    """The spans the revisions of a job define (any order)."""
    ordered = sorted(history, key=lambda revision: revision.revision)
    spans: list[ScheduleSpan] = []
    for index, revision in enumerate(ordered):
        definition = revision.definition
        if revision.deleted or not definition.get("enabled", True):
            continue
        end = ordered[index + 1].at if index + 1 < len(ordered) else None
        spans.append(ScheduleSpan(revision.at, end, str(definition["schedule"]),
                                  str(definition.get("timezone") or DEFAULT_TIMEZONE),
                                  jitter_offset(job_id, int(definition.get("jitter_s") or 0)),
                                  timedelta(seconds=float(definition.get("misfire_grace_s") or 0))))
    return spans


@dataclass(frozen=True)
class LedgerSlot:
    scheduled_for: datetime
    outcome: str
    run_id: str | None = None
    reason: str | None = None

    def view(self) -> dict[str, Any]:
        return {"scheduled_for": format_instant(self.scheduled_for), "outcome": self.outcome, "run_id": self.run_id,
                "reason": self.reason}


def slot_instants(spans: Sequence[ScheduleSpan], low: datetime, high: datetime,
                  limit: int) -> list[tuple[datetime, ScheduleSpan]]:
    """The slots in ``[low, high]`` with the span that named each, ascending; at most
    ``limit + 1`` (one more tells the caller there were too many)."""
    found: list[tuple[datetime, ScheduleSpan]] = []
    for span in spans:
        window = span.clip(low, high)
        if window is None:
            continue
        for at in cron.fires_between(span.schedule, span.timezone, window[0], window[1], limit + 1 - len(found)):
            found.append((at, span))
        if len(found) > limit:
            break
    found.sort(key=lambda item: item[0])
    return found[: limit + 1]


def default_from(spans: Sequence[ScheduleSpan], to: datetime, count: int = DEFAULT_LEDGER_SLOTS) -> datetime:
    """The instant of the ``count``-th latest slot up to ``to`` (the start of the default range)."""
    instants: list[datetime] = []
    for span in spans:
        until = min(to, span.end) if span.end is not None else to
        after = span.start if span.start is not None else until - timedelta(days=366)
        if after < until:
            instants += latest_fires(span.schedule, span.timezone, after, until, count)
    instants.sort()
    if not instants:
        return to
    return instants[-count] if len(instants) >= count else instants[0]


def ledger(job_id: str, tags: Iterable[str], spans: Sequence[ScheduleSpan], runs: Sequence[Run],
           windows: Sequence[MaintenanceWindow], low: datetime, high: datetime, now: datetime,
           limit: int = MAX_LEDGER_SLOTS) -> list[LedgerSlot]:
    """The ledger of one job over ``[low, high]`` at ``now`` (see the module docstring).
    ``runs``: its scheduled runs in the range and those that cover part of it.

    Raises:
        TooManySlots: more than ``limit`` slots in the range.
    """
    instants = slot_instants(spans, low, high, limit)
    own = {run.scheduled_for: run for run in runs if run.scheduled and run.scheduled_for is not None}
    by_slot: dict[datetime, ScheduleSpan | None] = {at: span for at, span in instants}
    for at in own:
        if low <= at <= high:
            by_slot.setdefault(at, None)
    if len(by_slot) > limit:
        raise TooManySlots(f"The range holds more than {limit} slots; ask for a shorter one.",
                           details={"limit": limit})
    held = windows_of_job(job_id, tags, windows)
    covering = [run for run in runs if run.covers_from is not None and run.covers_until is not None]
    return [classify(at, span, own.get(at), held, covering, now) for at, span in sorted(by_slot.items())]


def windows_of_job(job_id: str, tags: Iterable[str], windows: Sequence[MaintenanceWindow]) -> list[MaintenanceWindow]:
    tag_set = tuple(tags)
    return [window for window in windows if window.covers(job_id, tag_set)]


def classify(at: datetime, span: ScheduleSpan | None, run: Run | None, windows: Sequence[MaintenanceWindow],
             covering: Sequence[Run], now: datetime) -> LedgerSlot:
    """The outcome of one slot (the rules of the module docstring, in order)."""
    if run is not None:
        return LedgerSlot(at, run.status, run.run_id, run.error.type if run.error else None)
    if window_holding(at, windows) is not None:
        return LedgerSlot(at, RunStatus.SKIPPED, None, ErrorType.MAINTENANCE)
    for other in covering:
        assert other.covers_from is not None and other.covers_until is not None
        if other.covers_from <= at < other.covers_until:
            if other.status == RunStatus.SKIPPED:
                return LedgerSlot(at, RunStatus.SKIPPED, other.run_id, other.error.type if other.error else None)
            return LedgerSlot(at, COALESCED, other.run_id, None)
    delay = (span.jitter + span.grace) if span is not None else timedelta(0)
    if at + delay >= now:
        return LedgerSlot(at, PENDING)
    return LedgerSlot(at, MISSED)


def missed_slots(job: Job, spans: Sequence[ScheduleSpan], runs: Sequence[Run], windows: Sequence[MaintenanceWindow],
                 low: datetime, high: datetime, now: datetime, limit: int) -> list[datetime]:
    """The slots in ``[low, high]`` that are ``missed`` at ``now`` (for the leader's audit;
    at most ``limit`` slots are looked at)."""
    instants = slot_instants(spans, low, high, limit)[:limit]
    own = {run.scheduled_for for run in runs if run.scheduled}
    held = windows_of(job, windows)
    covering = [run for run in runs if run.covers_from is not None and run.covers_until is not None]
    return [at for at, span in instants
            if at not in own and classify(at, span, None, held, covering, now).outcome == MISSED]


__all__ = [
    "COALESCED",
    "DEFAULT_LEDGER_SLOTS",
    "MAX_LEDGER_SLOTS",
    "MISSED",
    "PENDING",
    "LedgerSlot",
    "ScheduleSpan",
    "TooManySlots",
    "classify",
    "default_from",
    "ledger",
    "missed_slots",
    "slot_instants",
    "span_of",
    "spans_from_history",
    "spans_of",
]
