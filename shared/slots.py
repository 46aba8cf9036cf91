"""Which slots of a job fire now: the scheduler's pure slot logic (SPEC §4).

Nothing here reads a clock or touches a database: `plan_slots(job, now)` takes a
`Job` (as read from ``jobs``) and the instant ``now`` (the database clock) and
returns a `SlotPlan`: the slots to run, the slots to record as ``skipped``,
and the next slot the job waits for.

Terms
    slot
        A fire instant of the job's cron schedule in its time zone (DST rules are
        `cronhive.cron`'s). A run's ``scheduled_for`` is its slot, before jitter.
    jitter
        `Job.jitter`: a deterministic per-job offset in ``[0, jitter_s)``. A slot ``S`` is *due* once ``S + jitter <= now``; the
        job's ``due_at`` is its next slot plus the jitter.
    late
        How late a due slot is dispatched, jitter excluded: ``now - jitter - S``.
    due slots
        ``S1 < S2 < ... < Sk``: the job's stored ``next_fire_at`` (``S1``, the slot
        it was waiting for) and every later slot that is due too. Normally ``k`` is
        1 and ``S1`` is a few milliseconds late. More than one due slot, or a slot
        later than ``misfire_grace_s``, means slots were *missed* (all schedulers
        down, MongoDB unreachable, the job disabled and re-enabled, a leader lagging
        by more than a slot).

Misfire policies (``misfire_policy``; ``misfire_grace_s`` default 60)
    ``fire_once`` (default)
        Only the latest due slot ``Sk`` is considered: it runs if it is late by at
        most the grace, else it is recorded as one ``skipped`` run. The older due
        slots are coalesced into it (no record of their own).
    ``skip``
        Missed slots are not run but recorded: ``Sk`` runs if it is within the
        grace (it is on time) and, if older slots were due too, one ``skipped``
        run at ``S(k-1)`` records them; when ``Sk`` itself is past the grace, one
        ``skipped`` run at ``Sk`` records all ``k`` of them.
    ``fire_all``
        Every due slot runs, grace or not, up to `MAX_FIRE_ALL` (100): when more
        were due, the latest 100 run and one ``skipped`` run at ``S1`` records that
        the older ones were not.

Maintenance windows (`cronhive.windows`, passed in)
    A due slot inside a window that names the job is recorded as one ``skipped``
    run of type ``maintenance`` and is no part of the misfire decision: the
    policy above decides only over the due slots outside every window, so a
    window's slots are never replayed once it has ended.

What a run stands for (``SlotPlan.covers``)
    The one run a ``fire_once`` catch-up fires (or skips) at ``Sk`` stands for
    the due slots ``[S1, Sk)`` that get no run of their own (coalesced into it);
    the ``skip`` note at ``S(k-1)`` (or ``Sk``) for those it skipped; the
    ``fire_all`` note at ``S1`` for those beyond the cap. The run records the
    range (``covers_from``, ``covers_until``), which the slot ledger
    (`cronhive.ledger`) reads.

Bounded schedules (``start_at``, ``end_at``, ``max_fires``)
    Only due slots in ``[start_at, end_at)`` are planned (`Job.in_bounds`), and the
    job waits for the first slot within them (`Job.next_bounded_slot`); none left:
    ``next_fire_at`` and ``due_at`` become null and the job is ``completed``. Under
    ``max_fires`` at most ``fires_left`` slots fire (the oldest); the overlap step
    (`cronhive.scheduler.overlap.resolve`) counts the slots that really fire into the
    job's advance write (`JobAdvance.fired_counted`: skipped slots do not count) and
    ends the schedule once ``max_fires`` is reached.

After the plan, the job waits for the first slot after ``now - jitter``.
A job whose schedule cannot be computed any more (its time zone vanished from
the tz database, a corrupt expression) raises `UncomputableSchedule`; the
scheduler disables it with the message as ``disabled_reason``.

Cost: the normal case is one ``next_fire`` call. Finding the latest due slots
after a long outage walks backwards from ``now`` in windows that double while
they are empty (`latest_fires`), so it is cheap even after a year of downtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronhive import cron
from cronhive.domain import MAX_FIRE_ALL, Job
from cronhive.enums import ErrorType, MisfirePolicy, Trigger
from cronhive.errors import InvalidSchedule
from cronhive.leases import Lease
from cronhive.windows import MaintenanceWindow, window_holding, windows_of

#: Largest window `latest_fires` enumerates in one go; denser windows are halved.
ENUMERATION_LIMIT = 512
_FIRST_WINDOW = timedelta(seconds=1)


class UncomputableSchedule(InvalidSchedule):
    """The job's stored schedule or time zone no longer yields fire times."""

    code = "uncomputable_schedule"


@dataclass(frozen=True)
class SkippedSlot:
    """A slot recorded as a ``skipped`` run, with why (``type``: `ErrorType.MISFIRE`, or
    `ErrorType.MAINTENANCE` for a slot inside an open maintenance window)."""

    at: datetime
    message: str
    type: ErrorType = ErrorType.MISFIRE


@dataclass(frozen=True)
class SlotPlan:
    """What the scheduler does with one job at one instant.

    ``fire``: slots to run now, ascending. ``skipped``: slots recorded as
    ``skipped`` runs. ``next_fire_at``/``due_at``: the state to advance the job
    to (for a job that is not due, its current state). ``advance`` tells whether
    that state differs from the stored one (only then is there anything to write).
    ``missed``: due slots that do not run now (coalesced, skipped or past the
    fire_all cap), counted up to ``MAX_FIRE_ALL + 1``.
    """

    job_id: str
    advance: bool
    fire: tuple[datetime, ...]
    skipped: tuple[SkippedSlot, ...]
    next_fire_at: datetime | None
    due_at: datetime | None
    missed: int = 0
    #: ``(slot, from, until)``: the run of ``slot`` stands for the due slots in
    #: ``[from, until)`` that get no run of their own (coalesced or skipped with it)
    covers: tuple[tuple[datetime, datetime, datetime], ...] = ()

    @property
    def slots(self) -> tuple[datetime, ...]:
        """Every slot that gets a run record (fired or skipped), ascending."""
        return tuple(sorted((*self.fire, *(s.at for s in self.skipped))))

    def covered_by(self, slot: datetime) -> tuple[datetime, datetime] | None:
        """The ``[from, until)`` range the run of ``slot`` stands for, if any."""
        return next(((low, high) for at, low, high in self.covers if at == slot), None)


@dataclass(frozen=True)
class SlotRun:
    """The run record one slot gets: fired (``pending`` until published) or ``skipped``.

    ``skip_type``: `ErrorType.MISFIRE` or `ErrorType.OVERLAP` for skipped runs. ``lease_token``:
    the job-lease token reserved for a fired run (None under ``allow`` and for a
    ``buffer_one`` run that waits for the lease).
    """

    run_id: str
    slot: datetime
    fire: bool
    skip_type: ErrorType | None = None
    message: str | None = None
    lease_token: int | None = None
    #: the ``[from, until)`` range of due slots without a run that this run stands for
    covers: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class JobAdvance:
    """The compare-and-set write that moves a job past its dispatched slots.

    ``job``: the job as read; the write applies only while its ``revision`` and
    ``next_fire_at`` are still as read, and its lease (``lease_decided``: the
    overlap decision read it) and ``buffered_run_id`` (``buffer_decided``) too.
    It sets the next slot and ``due_at``, the lease ``reservation`` made for the
    first fired run (with its token as ``lease_term``) and the run that now waits
    for the lease (``buffered_run_id``), when any. ``triggered``: a run fired, so
    ``last_triggered_at`` moves. The store adds the leader's fencing term
    (`cronhive.store.documents.advance_write` builds the write).
    """

    job: Job
    next_fire_at: datetime | None
    due_at: datetime | None
    triggered: bool
    lease_decided: bool = False
    buffer_decided: bool = False
    reservation: Lease | None = None
    buffered_run_id: str | None = None
    #: slots fired by this write that count against ``max_fires`` (0 for an unbounded job)
    fired_counted: int = 0

    @property
    def job_id(self) -> str:
        return self.job.job_id


def slot_run_id(job_id: str, slot: datetime, trigger: Trigger = Trigger.SCHEDULE) -> str:
    """The id of the run of one slot: ``run_YYYYMMDD_HHMMSS_<hash>``, deterministic.

    The same slot always gets the same id, so a scheduler that takes over after a
    crash and plans the slot again writes the very same run (the unique
    ``slot_key`` index keeps one run per slot either way). A backfill's run of the
    slot has its own id (``trigger`` is hashed in), unique by ``backfill_key``.
    """
    instant = slot.astimezone(UTC)
    key = f"{job_id}|{instant.isoformat()}" + ("" if trigger == Trigger.SCHEDULE else f"|{trigger}")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"run_{instant.strftime('%Y%m%d_%H%M%S')}_{digest}"


def backfill_slots(job: Job, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """The job's slots in ``[start, end)`` (its schedule, zone and DST rules), ascending,
    at most ``limit`` (the caller refuses a range holding more). Its ``start_at`` /
    ``end_at`` bounds do not apply: a backfill names its own range."""
    before = timedelta(microseconds=1)
    return cron.fires_between(job.schedule, job.zone, start - before, end - before, limit)


def latest_fires(expr: str, tz: str, after: datetime, until: datetime, count: int) -> list[datetime]:
    """The last ``count`` fire instants in ``(after, until]``, ascending.

    Walks backwards from ``until`` in windows that double while sparse and halve
    when one holds more than `ENUMERATION_LIMIT` fires, enumerating each window
    with ``cron.fires_between``: cost grows with ``count``, not with the distance
    between ``after`` and ``until``.
    """
    found: list[datetime] = []
    high = until
    span = _FIRST_WINDOW
    while len(found) < count and high > after:
        low = after if span >= high - after else high - span
        window = cron.fires_between(expr, tz, low, high, ENUMERATION_LIMIT + 1)
        if len(window) > ENUMERATION_LIMIT:
            span = span / 2
            continue
        found[:0] = window
        high = low
        span = span * 2
    return found[-count:] if count else []


def due_slots(job: Job, reference: datetime, count: int) -> tuple[list[datetime], bool]:
    """The latest ``count`` due slots (ascending) and whether older ones were due too.

    ``reference`` is ``now - jitter``: slots up to it are due. ``next_fire_at``
    (the slot the job waits for) is the first due slot by definition.
    """
    first = job.next_fire_at
    assert first is not None  # a due job waits for a slot
    following = cron.next_fire(job.schedule, job.zone, first)
    if following > reference:  # the normal case: exactly one due slot
        return [first], False
    slots = [first, *latest_fires(job.schedule, job.zone, first, reference, count + 1)]
    return slots[-count:], len(slots) > count


def plan_slots(job: Job, now: datetime, windows: Sequence[MaintenanceWindow] = ()) -> SlotPlan:
    """The `SlotPlan` of ``job`` at ``now`` (see the module docstring). ``windows``: the
    maintenance windows that may hold some of its due slots (those not naming the job
    are ignored); a due slot inside one is recorded ``skipped`` (type ``maintenance``)
    and the misfire policy decides only over the others.

    Raises:
        UncomputableSchedule: the stored schedule, time zone or timing state can
            no longer be computed.
    """
    try:
        return _plan(job, now, windows_of(job, windows) if windows else [])
    except UncomputableSchedule:
        raise
    except Exception as exc:  # any failure of the pure computation: the job cannot be planned
        raise UncomputableSchedule(
            f"schedule {job.schedule!r} in time zone {job.timezone!r} can no longer be "
            f"computed: {getattr(exc, 'message', None) or exc}",
            details={"job_id": job.job_id},
        ) from exc


def _plan(job: Job, now: datetime, windows: list[MaintenanceWindow]) -> SlotPlan:
    job_id = job.job_id
    if not job.enabled or job.due_at is None:  # a disabled job keeps no due_at
        return SlotPlan(job_id, job.due_at is not None, (), (), job.next_fire_at, None)
    jitter = job.jitter
    reference = now - jitter
    if job.next_fire_at is None:  # no slot recorded yet: start from now, fire nothing
        next_fire, due_at = job.next_bounded_slot(reference)
        return SlotPlan(job_id, True, (), (), next_fire, due_at)
    if job.next_fire_at > reference:  # not due (a stale due_at is corrected)
        due_at = job.next_fire_at + jitter
        return SlotPlan(job_id, due_at != job.due_at, (), (), job.next_fire_at, due_at)
    grace = timedelta(seconds=float(job.misfire_grace_s))
    due, more = due_slots(job, reference, MAX_FIRE_ALL)
    if job.start_at is not None or job.end_at is not None:  # no slot outside [start_at, end_at)
        due = [slot for slot in due if job.in_bounds(slot)]
    held = [SkippedSlot(at, f"inside maintenance window {window.maintenance_id} (until {_iso(window.end)})",
                        ErrorType.MAINTENANCE)
            for at in due if (window := window_holding(at, windows)) is not None]
    slots = [at for at in due if window_holding(at, windows) is None]
    fire: list[datetime] = []
    skipped: list[SkippedSlot] = []
    if slots and job.misfire_policy == MisfirePolicy.FIRE_ALL:
        fire, skipped = _fire_all(job.next_fire_at, slots, more)
    elif slots and job.misfire_policy == MisfirePolicy.SKIP:
        fire, skipped = _skip(job.next_fire_at, slots, reference, grace)
    elif slots:
        fire, skipped = _fire_once(slots, reference, grace)
    if job.fires_left is not None:  # max_fires: the oldest of what is left; the scheduler counts them
        fire = fire[:job.fires_left]
    covers = _covers(job, job.next_fire_at, slots, more, fire, skipped)
    missed = len(slots) + (1 if more else 0) - len(fire)
    next_fire, due_at = job.next_bounded_slot(reference)
    return SlotPlan(job_id, True, tuple(fire), tuple(sorted([*skipped, *held], key=lambda s: s.at)), next_fire,
                    due_at, missed, covers)


def _covers(job: Job, first: datetime, slots: list[datetime], more: bool, fire: list[datetime],
            skipped: list[SkippedSlot]) -> tuple[tuple[datetime, datetime, datetime], ...]:
    """Which run stands for the due slots that get none (see `SlotPlan.covers`): under
    ``fire_once`` and ``skip`` the one run at the end of the missed range, under
    ``fire_all`` the note at the first slot for those beyond the cap."""
    if job.misfire_policy == MisfirePolicy.FIRE_ALL:
        return ((first, first, slots[0]),) if more and skipped and slots and first < slots[0] else ()
    records = sorted([*fire, *(s.at for s in skipped)])
    if not records or (len(slots) <= len(records) and not more):
        return ()
    if job.misfire_policy == MisfirePolicy.SKIP and skipped:
        at = skipped[0].at
        return ((at, first, at),) if first < at else ()
    at = records[-1]
    return ((at, first, at),) if first < at else ()


def _fire_all(first: datetime, slots: list[datetime], more: bool) -> tuple[list[datetime], list[SkippedSlot]]:
    if not more:
        return slots, []
    note = SkippedSlot(first, f"missed slots from {_iso(first)} to before {_iso(slots[0])} were not run: "
                              f"fire_all runs at most the latest {MAX_FIRE_ALL} missed slots")
    return slots, [note]


def _fire_once(slots: list[datetime], reference: datetime, grace: timedelta) -> tuple[list[datetime], list[SkippedSlot]]:
    latest = slots[-1]
    if reference - latest <= grace:
        return [latest], []
    return [], [SkippedSlot(latest, f"slot missed by {_seconds(reference - latest)} s, more than the "
                                    f"misfire grace of {_seconds(grace)} s (fire_once)")]


def _skip(first: datetime, slots: list[datetime], reference: datetime,
          grace: timedelta) -> tuple[list[datetime], list[SkippedSlot]]:
    latest = slots[-1]
    if reference - latest <= grace:
        if len(slots) == 1:
            return [latest], []
        note = SkippedSlot(slots[-2], f"missed slots from {_iso(first)} to {_iso(slots[-2])} were skipped "
                                      f"(misfire_policy skip)")
        return [latest], [note]
    note = SkippedSlot(latest, f"missed slots from {_iso(first)} to {_iso(latest)} were skipped "
                               f"(misfire_policy skip; {_seconds(reference - latest)} s late, grace "
                               f"{_seconds(grace)} s)")
    return [], [note]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}"


__all__ = [
    "ENUMERATION_LIMIT",
    "JobAdvance",
    "SkippedSlot",
    "SlotPlan",
    "SlotRun",
    "UncomputableSchedule",
    "backfill_slots",
    "due_slots",
    "latest_fires",
    "plan_slots",
    "slot_run_id",
]
