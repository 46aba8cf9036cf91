"""Backfill: run a job's past slots again (``POST /jobs/:id/backfill``).

A backfill of ``[start, end)`` computes the job's slots in the range with its
schedule, zone and DST rules (`cronhive.slots.backfill_slots`, at most
`MAX_BACKFILL_SLOTS`), keeps those ``reprocess`` chooses (`choose_slots`) and
gives each one run with ``trigger: backfill`` and ``scheduled_for`` = the slot:

1. insert them ``pending`` in one unordered ``insert_many``; the run id is derived
   from (job, slot, ``backfill``) and the index "backfill_key" is unique on (job,
   slot) for backfill runs, so a slot gets its backfill run once — the same
   request again creates only what is still missing;
2. publish the new runs oldest first with confirms (`cronhive.broker.RunPublisher`);
3. mark the confirmed ``queued``, one ``update_many`` per `MARK_BATCH` runs.

No job lease is reserved: under ``forbid`` (and ``buffer_one``) the worker makes
a backfill run wait while an older backfill run of the job has not started or
another run holds the lease (`cronhive.worker.middleware`), so they run one after
another, oldest first, and none is skipped. Disabled and completed jobs can be
backfilled. If RabbitMQ fails midway, `BrokerUnavailable` propagates (503): the
runs not confirmed stay ``pending`` and the leader scheduler's backlog pass
publishes them (like a manual run, once `MANUAL_PENDING_S` old).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cronhive.broker import RunPublisher
from cronhive.domain import MAX_BACKFILL_SLOTS, Run, format_instant, new_run
from cronhive.enums import Reprocess, RunStatus, Trigger
from cronhive.errors import Unavailable, ValidationError
from cronhive.slots import backfill_slots, slot_run_id
from cronhive.store.protocols import BackfillStore

log = logging.getLogger("cronhive.backfill")

#: Confirmed runs are marked ``queued`` this many at a time (one ``update_many`` each).
MARK_BATCH = 100
#: A slot whose run ended like this did not succeed (``reprocess: failed``).
FAILED_STATUSES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})


@dataclass(frozen=True)
class BackfillResult:
    job_id: str
    backfill_id: str
    slots: int
    created: int
    run_ids: tuple[str, ...]


def backfill_id(job_id: str, start: datetime, end: datetime, reprocess: Reprocess) -> str:
    """``bf_<hash>``: the same request always gets the same id."""
    key = f"{job_id}|{start.astimezone(UTC).isoformat()}|{end.astimezone(UTC).isoformat()}|{reprocess}"
    return "bf_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def choose_slots(slots: list[datetime], outcomes: Mapping[datetime, set[RunStatus]],
                 reprocess: Reprocess) -> list[datetime]:
    """The slots a backfill runs: ``missing`` — no run of the slot (schedule or backfill)
    succeeded; ``failed`` — one failed, timed out or was abandoned and none succeeded;
    ``all`` — every one."""
    if reprocess == Reprocess.ALL:
        return list(slots)
    chosen = []
    for slot in slots:
        statuses = outcomes.get(slot, set())
        if RunStatus.SUCCEEDED in statuses:
            continue
        if reprocess == Reprocess.MISSING or statuses & FAILED_STATUSES:
            chosen.append(slot)
    return chosen


def backfill_job(store: BackfillStore, publisher: RunPublisher, job_id: str, start: datetime, end: datetime,
                 reprocess: Reprocess, now: datetime) -> BackfillResult:
    """Create and publish the backfill runs of ``[start, end)`` (see the module docstring).
    Raises `ValidationError` for a range of more than `MAX_BACKFILL_SLOTS` slots."""
    job = store.get_job(job_id)
    slots = backfill_slots(job, start, end, MAX_BACKFILL_SLOTS + 1)
    if len(slots) > MAX_BACKFILL_SLOTS:
        raise ValidationError(
            f"the range holds more than {MAX_BACKFILL_SLOTS} slots of {job.schedule!r}; backfill it in parts",
            details={"end": [f"[start, end) holds more than {MAX_BACKFILL_SLOTS} slots (from "
                             f"{format_instant(slots[0])} to at least {format_instant(slots[-1])})."]})
    chosen = choose_slots(slots, store.slot_outcomes(job_id, start, end) if slots else {}, reprocess)
    runs = [new_run(job, slot_run_id(job_id, slot, Trigger.BACKFILL), Trigger.BACKFILL, slot, now, None)
            for slot in chosen]
    created = store.insert_backfill_runs(runs)
    ident = backfill_id(job_id, start, end, reprocess)
    _publish(store, publisher, created, now)
    log.info("backfill %s of %d slot(s): %d run(s) created", ident, len(chosen), len(created),
             extra={"job_id": job_id})
    return BackfillResult(job_id, ident, len(chosen), len(created), tuple(run.run_id for run in created))


def _publish(store: BackfillStore, publisher: RunPublisher, runs: list[Run], now: datetime) -> None:
    """Publish oldest first, marking the confirmed ``queued`` every `MARK_BATCH` runs and
    when a publish fails (the rest stays ``pending`` for the scheduler's backlog pass)."""
    confirmed: list[str] = []
    try:
        for run in sorted(runs, key=lambda item: (item.scheduled_for or now, item.run_id)):
            publisher.publish_run(run.run_id, run.job_id)
            confirmed.append(run.run_id)
            if len(confirmed) >= MARK_BATCH:
                _mark(store, confirmed, now)
                confirmed = []
    finally:
        _mark(store, confirmed, now)


def _mark(store: BackfillStore, run_ids: list[str], now: datetime) -> None:
    if not run_ids:
        return
    try:
        store.mark_many_queued(run_ids, now)
    except Unavailable:  # RabbitMQ has them: they run; they only show pending meanwhile
        log.warning("backfill runs published but not marked queued", exc_info=True)
