"""Maintenance windows: a planned pause of a group of jobs (by tag or by id) that
ends by itself. Pure: every function takes the instant it decides on.

A window is one document of ``maintenance`` (``_id`` = ``maintenance_id``), covering
``[start, end)``. While it is *open* (``start <= now < end``) the jobs it names are
shown ``paused`` with ``paused_until`` (a computed view: no job document is
rewritten), and the scheduler records each of their slots inside it as a
``skipped`` run with error type ``maintenance`` (`cronhive.slots.plan_slots`), so
the misfire policy never replays those slots once the window has ended. Ending a
window early (``DELETE``) moves its ``end`` to that instant and keeps the asked end
as ``planned_end``. Manual triggers are not affected.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cronhive.domain import Job, format_instant

MAX_WINDOW_JOBS = 1000
MAX_WINDOW_TAGS = 20
MAX_REASON_LENGTH = 500


class WindowState(StrEnum):
    UPCOMING = "upcoming"
    ACTIVE = "active"
    ENDED = "ended"


WINDOW_STATES = tuple(member.value for member in WindowState)


def new_maintenance_id(at: datetime) -> str:
    """``mnt_YYYYMMDD_HHMMSS_<random>``: the UTC creation instant plus a unique suffix."""
    return f"mnt_{at.astimezone(UTC).strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(4)}"


@dataclass(frozen=True)
class MaintenanceWindow:
    """One window: the jobs it names (``tags`` or ``job_ids``, exactly one given) over
    ``[start, end)``. ``planned_end``: the end asked for (``end`` moves when it is
    ended early, ``ended_early_at`` says when)."""

    maintenance_id: str
    start: datetime
    end: datetime
    tags: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()
    reason: str | None = None
    created_at: datetime | None = None
    planned_end: datetime | None = None
    ended_early_at: datetime | None = None
    #: the actors (token names) that opened it and ended it early
    created_by: str | None = None
    ended_by: str | None = None

    def state(self, now: datetime) -> WindowState:
        if now < self.start:
            return WindowState.UPCOMING
        if now < self.end:
            return WindowState.ACTIVE
        return WindowState.ENDED

    def holds(self, at: datetime) -> bool:
        """``at`` lies inside the window (start inclusive, end exclusive)."""
        return self.start <= at < self.end

    def covers(self, job_id: str, tags: Iterable[str]) -> bool:
        """The window names the job: by id, or by one of its tags."""
        if self.job_ids:
            return job_id in self.job_ids
        return not set(self.tags).isdisjoint(tags)

    def view(self, now: datetime) -> dict[str, object]:
        """As the API shows it."""
        return {
            "maintenance_id": self.maintenance_id,
            "tags": list(self.tags) if self.tags else None,
            "job_ids": list(self.job_ids) if self.job_ids else None,
            "start": format_instant(self.start),
            "end": format_instant(self.end),
            "planned_end": format_instant(self.planned_end or self.end),
            "reason": self.reason,
            "status": self.state(now),
            "ended_early": self.ended_early_at is not None,
            "created_at": format_instant(self.created_at),
            "created_by": self.created_by,
            "ended_by": self.ended_by,
        }


def windows_of(job: Job, windows: Sequence[MaintenanceWindow]) -> list[MaintenanceWindow]:
    """The windows of ``windows`` that name ``job``."""
    return [window for window in windows if window.covers(job.job_id, job.tags)]


def paused_until(job: Job, windows: Sequence[MaintenanceWindow], now: datetime) -> datetime | None:
    """When the latest window open at ``now`` that names ``job`` ends (None: not paused).
    A disabled job is not paused (it is disabled)."""
    if not job.enabled:
        return None
    ends = [window.end for window in windows_of(job, windows) if window.holds(now)]
    return max(ends) if ends else None


def window_holding(at: datetime, windows: Sequence[MaintenanceWindow]) -> MaintenanceWindow | None:
    """The first of ``windows`` (already those of one job) that holds ``at``."""
    return next((window for window in windows if window.holds(at)), None)


__all__ = [
    "MAX_REASON_LENGTH",
    "MAX_WINDOW_JOBS",
    "MAX_WINDOW_TAGS",
    "WINDOW_STATES",
    "MaintenanceWindow",
    "WindowState",
    "new_maintenance_id",
    "paused_until",
    "window_holding",
    "windows_of",
]
