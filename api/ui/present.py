"""How the dashboard shows values: schedules in words, instants, durations, DST.

Pure functions over the API's views (`job_view`, `run_view`: instants as
``...Z`` strings) and the cron rules of `cronhive.cron`; every function that
needs the present takes it as an argument.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cron_descriptor import ExpressionDescriptor, Options

from cronhive import cron
from cronhive.errors import InvalidSchedule

#: Colour class of each run status (and of "ran", for a slot strip).
STATUS_CLASS = {
    "pending": "queued", "queued": "queued", "running": "running", "succeeded": "ok", "failed": "bad",
    "timed_out": "bad", "abandoned": "bad", "skipped": "skip", "cancelled": "off", "active": "ok",
    "disabled": "off", "completed": "skip", "invalid": "bad",
    "paused": "skip", "coalesced": "coalesced", "missed": "missed",
}


def parse_instant(value: str | datetime | None) -> datetime | None:
    """An API instant (``2026-03-26T08:00:00Z``) or a datetime, as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def utc_text(value: str | datetime | None, seconds: bool = True) -> str:
    """``2026-03-26 08:00:00 UTC`` (an en dash when unset)."""
    instant = parse_instant(value)
    if instant is None:
        return "–"
    return instant.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def relative(value: str | datetime | None, now: datetime) -> str:
    """``in 4 min`` / ``3 h ago`` / ``now``."""
    instant = parse_instant(value)
    if instant is None:
        return ""
    delta = (instant - now).total_seconds()
    text = _span(abs(delta))
    if text == "now":
        return text
    return f"in {text}" if delta > 0 else f"{text} ago"


def _span(seconds: float) -> str:
    if seconds < 1:
        return "now"
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400 * 2:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if hours < 10 and rest >= 60 else f"{hours} h"
    return f"{int(seconds // 86400)} d"


def duration(ms: int | float | None) -> str:
    """``350 ms`` / ``1.25 s`` / ``2 min 03 s`` / ``1 h 05 min``."""
    if ms is None:
        return "–"
    value = float(ms)
    sign = "−" if value < 0 else ""
    value = abs(value)
    if value < 1000:
        return f"{sign}{value:.0f} ms"
    if value < 10_000:
        return f"{sign}{value / 1000:.2f} s"
    if value < 60_000:
        return f"{sign}{value / 1000:.1f} s"
    minutes, seconds = divmod(int(value // 1000), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours} h {minutes:02d} min"


def _descriptor_options() -> Options:
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    options.day_of_week_start_index_zero = True
    return options


@functools.lru_cache(maxsize=4096)
def describe(schedule: str) -> str:
    """The schedule in plain words (cron-descriptor, on the fields as `cronhive.cron` reads
    them: seconds first in a 6-field expression, macros expanded, Vixie day rule noted).
    An expression cron does not accept is described as such."""
    try:
        parsed = cron.parse_schedule(schedule)
    except InvalidSchedule:
        return "not a valid schedule"
    fields = list(parsed.fields)
    if not parsed.has_seconds:
        fields.insert(0, "0")
    # 7 fields (seconds … day-of-week, year): cron-descriptor reads them without guessing
    text = str(ExpressionDescriptor(" ".join([*fields, "*"]), _descriptor_options()).get_description())
    if parsed.day_or:
        text += " (on either: the day of month or the weekday)"
    if parsed.expression.startswith("@"):
        text += f" ({parsed.expression})"
    return text


@dataclass(frozen=True)
class FireRow:
    """One upcoming fire, in UTC and in the job's zone, with what DST did before it."""

    utc: datetime
    local: datetime
    offset: str
    zone_abbr: str
    #: e.g. ``CET → CEST (UTC+01:00 → UTC+02:00)`` when the zone's offset changed since the previous fire.
    transition: str | None

    @property
    def utc_text(self) -> str:
        return self.utc.strftime("%a %Y-%m-%d %H:%M:%S UTC")

    @property
    def local_text(self) -> str:
        return self.local.strftime("%a %Y-%m-%d %H:%M:%S")


def _offset_text(instant: datetime) -> str:
    offset = instant.utcoffset() or timedelta(0)
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    hours, rest = divmod(abs(total), 3600)
    return f"UTC{sign}{hours:02d}:{rest // 60:02d}"


def fire_rows(fires: list[datetime], tz: str, after: datetime) -> list[FireRow]:
    """The fires of a schedule as the job's zone and UTC show them; a fire preceded by a
    change of the zone's UTC offset (a DST transition, since ``after`` or the previous
    fire) carries that transition."""
    zone = ZoneInfo(tz)
    previous = after.astimezone(zone)
    rows = []
    for fire in fires:
        local = fire.astimezone(zone)
        transition = None
        if local.utcoffset() != previous.utcoffset():
            transition = (f"{previous.tzname()} → {local.tzname()} "
                          f"({_offset_text(previous)} → {_offset_text(local)})")
        rows.append(FireRow(utc=fire.astimezone(UTC), local=local, offset=_offset_text(local),
                            zone_abbr=local.tzname() or "", transition=transition))
        previous = local
    return rows


def status_class(status: str | None) -> str:
    return STATUS_CLASS.get(status or "", "none")


def slot_outcome(run: dict[str, object]) -> tuple[str, str]:
    """A run's square in the slot strip: its class and its label (ran, failed, skipped, missed)."""
    status = str(run.get("status") or "")
    error = run.get("error")
    if status == "skipped":
        why = str(error.get("type") or "") if isinstance(error, dict) else ""
        return ("missed", "missed") if why == "misfire" else ("skip", "skipped")
    if status == "succeeded":
        return "ok", "ran"
    if status in ("failed", "timed_out", "abandoned"):
        return "bad", status.replace("_", " ")
    return status_class(status), status


#: A ledger outcome's square: its class and its label.
_OUTCOME_SQUARE = {
    "succeeded": ("ok", "ran"), "failed": ("bad", "failed"), "timed_out": ("bad", "timed out"),
    "abandoned": ("bad", "abandoned"), "skipped": ("skip", "skipped"), "missed": ("missed", "missed"),
    "coalesced": ("coalesced", "coalesced"), "pending": ("queued", "pending"), "queued": ("queued", "queued"),
    "running": ("running", "running"),
}


def slot_square(slot: dict[str, object]) -> tuple[str, str]:
    """A ledger slot's square in the strip (`cronhive.ledger` outcomes): skipped ones say why."""
    outcome = str(slot.get("outcome") or "")
    css, label = _OUTCOME_SQUARE.get(outcome, (status_class(outcome), outcome))
    if outcome == "skipped" and slot.get("reason"):
        label = f"skipped ({slot['reason']})"
    return css, label


def slot_strip(slots: list[dict[str, object]], runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """The job page's strip, oldest first: the ledger's slots (skipped, missed and
    coalesced ones included) and the runs among ``runs`` (run views: the manual ones,
    and slot runs older than the ledger's range), each ``{run_id, scheduled_for,
    trigger, css, label}``."""
    items: list[dict[str, object]] = []
    for slot in slots:
        css, label = slot_square(slot)
        items.append({"run_id": slot.get("run_id"), "scheduled_for": slot.get("scheduled_for"),
                      "trigger": "schedule", "css": css, "label": label})
    shown = {item["run_id"] for item in items if item["run_id"]}
    for run in runs:  # manual runs, and slot runs the ledger's range did not reach
        if run.get("run_id") not in shown:
            css, label = slot_outcome(run)
            items.append({"run_id": run.get("run_id"), "scheduled_for": run.get("scheduled_for") or run.get("created_at"),
                          "trigger": run.get("trigger"), "css": css, "label": label})
    return sorted(items, key=lambda item: str(item["scheduled_for"] or ""))


def lateness_class(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms > 60_000:
        return "bad"
    if ms > 5_000:
        return "warn"
    return ""
