"""Cron math for cronhive: parse and validate schedules, compute fire instants (SPEC §4).

Pure functions, no clock: every computation starts from an explicit aware ``after``
instant and returns aware UTC datetimes.

Syntax
    Five fields ``min hour dom month dow`` or six fields with the seconds FIRST
    ``sec min hour dom month dow``. Values, ``a-b`` ranges, ``*``, ``*/n`` and
    ``a-b/n`` steps, ``,`` lists, three-letter month and weekday names (any case),
    Sunday as 0 or 7, and the macros ``@yearly @annually @monthly @weekly @daily
    @midnight @hourly``. Everything else (croniter's ``L W # H ?``, ``@reboot``,
    seven fields, ``a/n`` without a range end, reversed ranges, step 0, values out
    of range, non-ASCII, more than 256 characters) raises `InvalidSchedule`, and
    so does an expression that can never fire (``0 0 31 2 *``).

Day rule (Vixie cron)
    When day-of-month and day-of-week are both restricted, a day matching either
    fires (OR); a day field that starts with ``*`` counts as unrestricted, and
    then both must match (AND).

Time zones and DST (cronie / Vixie cron)
    A *fixed-time* schedule (neither the minute nor the hour field starts with
    ``*``) fires a wall time skipped by a spring-forward once, at the first instant
    after the gap (several skipped matches collapse into that one instant), and a
    wall time repeated by a fall-back once, at its first occurrence. A *wildcard*
    schedule follows the wall clock: skipped wall times never fire, repeated wall
    times fire at each real occurrence. Results are always strictly increasing.

How it is computed
    croniter enumerates *naive* wall-clock matches (no time zone, so none of its
    own DST handling is involved). The UTC timeline is cut into segments of
    constant UTC offset at the zone's transitions; inside a segment wall time and
    UTC differ by a constant, so the first fire of a segment is one croniter step.
    The common case -- no transition between ``after`` and the candidate -- costs
    one croniter step and two cached look-ups; a transition costs one more step
    per transition crossed.
"""

from __future__ import annotations

import bisect
import calendar
import copy
import functools
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from cronhive.errors import InvalidSchedule

__all__ = [
    "MACROS",
    "MAX_EXPRESSION_LENGTH",
    "CronSchedule",
    "fires_between",
    "load_timezone",
    "next_fire",
    "parse_schedule",
    "shortest_interval",
    "upcoming",
]

MAX_EXPRESSION_LENGTH = 256
MAX_TIMEZONE_LENGTH = 255

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = {name: i + 1 for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DOW_NAMES = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# Longest month for each month number, February counted as 29 (leap years exist).
_MONTH_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int  # highest value a literal may take (7 for day-of-week)
    star_high: int  # highest value of `*` (6 for day-of-week: 7 is Sunday again)
    names: dict[str, int] | None = None


_SECOND = _Field("second", 0, 59, 59)
_MINUTE = _Field("minute", 0, 59, 59)
_HOUR = _Field("hour", 0, 23, 23)
_DOM = _Field("day-of-month", 1, 31, 31)
_MONTH = _Field("month", 1, 12, 12, _MONTH_NAMES)
_DOW = _Field("day-of-week", 0, 7, 6, _DOW_NAMES)

# One list item: `*`, a value or a range, then an optional step. Names are matched
# as letters and checked against the field's name table afterwards.
_ITEM_RE = re.compile(r"(\*|[0-9]+|[a-z]+)(?:-([0-9]+|[a-z]+))?(?:/([0-9]+))?", re.ASCII)
# Printable ASCII plus tab: anything else (control characters, non-ASCII) is rejected.
_ALLOWED_CHARS_RE = re.compile(r"[\t\x20-\x7e]*", re.ASCII)
_TZ_NAME_RE = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*", re.ASCII)

_UTC = UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression, ready for fire-time computations.

    Attributes:
        expression: the normalized text (lower case, fields separated by one space;
            a macro stays a macro, e.g. ``"@daily"``). Store and display this.
        fields: the fields after macro expansion, as written (5, or 6 seconds-first).
        has_seconds: a six-field expression (seconds first).
        fixed_time: neither the minute nor the hour field starts with ``*`` (DST
            rule: skipped times fire once after the gap, repeated times fire once).
        day_or: the Vixie day rule: both day fields restricted, so a day matching
            either fires; otherwise both must match.
        seconds, minutes, hours, days_of_month, months, days_of_week: the values
            each field selects (Sunday is 0), ascending.
        croniter_expr: the equivalent expression handed to croniter: explicit value
            lists (no ranges or names, whose croniter semantics differ from cron's),
            seconds first when `has_seconds`, impossible days of month dropped.
        croniter_day_or: the ``day_or`` flag that goes with `croniter_expr`.
    """

    expression: str
    fields: tuple[str, ...]
    has_seconds: bool
    fixed_time: bool
    day_or: bool
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]
    croniter_expr: str
    croniter_day_or: bool
    _template: croniter = field(repr=False, compare=False, hash=False)

    def __str__(self) -> str:
        return self.expression


# --------------------------------------------------------------------------- parsing


def _invalid(expr: object, message: str) -> InvalidSchedule:
    shown = expr if isinstance(expr, str) else repr(expr)
    if len(shown) > MAX_EXPRESSION_LENGTH:
        shown = shown[:MAX_EXPRESSION_LENGTH] + "..."
    return InvalidSchedule(message, details={"schedule": shown})


def _value(expr: str, spec: _Field, token: str) -> int:
    if token.isdigit():
        if len(token) > 2:
            raise _invalid(expr, f"{spec.name} value {token!r} is out of range {spec.low}-{spec.high}")
        number = int(token)
    elif spec.names is not None and token in spec.names:
        number = spec.names[token]
    else:
        raise _invalid(expr, f"{spec.name} value {token!r} is not a number or a name of that field")
    if not spec.low <= number <= spec.high:
        raise _invalid(expr, f"{spec.name} value {number} is out of range {spec.low}-{spec.high}")
    return number


def _parse_field(expr: str, spec: _Field, text: str) -> tuple[int, ...]:
    """The values one field selects (day-of-week 7 folded into 0)."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _invalid(expr, f"{spec.name} field {text!r} has an empty list item")
        match = _ITEM_RE.fullmatch(item)
        if match is None:
            raise _invalid(expr, f"{spec.name} field item {item!r} is not valid cron syntax")
        start, end, step_text = match.groups()
        if start == "*":
            if end is not None:
                raise _invalid(expr, f"{spec.name} field item {item!r}: '*' cannot start a range")
            low, high = spec.low, spec.star_high
        else:
            low = _value(expr, spec, start)
            if end is None:
                if step_text is not None:
                    raise _invalid(expr, f"{spec.name} field item {item!r}: a step needs '*' or a range "
                                         f"(write '*/n' or 'a-b/n')")
                high = low
            else:
                high = _value(expr, spec, end)
                if high < low:
                    raise _invalid(expr, f"{spec.name} range {item!r} is reversed")
        step = 1
        if step_text is not None:
            step = int(step_text) if len(step_text) <= 3 else 0
            span = spec.star_high - spec.low + 1
            if not 1 <= step <= span:
                raise _invalid(expr, f"{spec.name} step in {item!r} must be between 1 and {span}")
        values.update(range(low, high + 1, step))
    if spec is _DOW and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


def _field_text(values: tuple[int, ...], spec: _Field) -> str:
    if len(values) == spec.star_high - spec.low + 1:
        return "*"
    return ",".join(str(v) for v in values)


def parse_schedule(expr: str | CronSchedule) -> CronSchedule:
    """Validate a cron expression and return its `CronSchedule` (cached by text).

    Raises:
        InvalidSchedule: not a string, not valid syntax (see the module docstring),
            or an expression that can never fire. ``details={"schedule": ...}``.
    """
    if isinstance(expr, CronSchedule):
        return expr
    if not isinstance(expr, str):
        raise _invalid(expr, f"schedule must be a string, not {type(expr).__name__}")
    return _parse_cached(expr)


@functools.lru_cache(maxsize=16384)
def _parse_cached(expr: str) -> CronSchedule:
    if len(expr) > MAX_EXPRESSION_LENGTH:
        raise _invalid(expr, f"schedule is longer than {MAX_EXPRESSION_LENGTH} characters")
    if not _ALLOWED_CHARS_RE.fullmatch(expr):
        raise _invalid(expr, "schedule may contain only printable ASCII characters")
    text = expr.strip(" \t").lower()
    if not text:
        raise _invalid(expr, "schedule is empty")

    if text.startswith("@"):
        if text not in MACROS:
            raise _invalid(expr, f"unknown macro {text!r}; use one of {', '.join(MACROS)}")
        normalized = text
        fields = tuple(MACROS[text].split(" "))
    else:
        fields = tuple(text.split())
        normalized = " ".join(fields)
    if len(fields) not in (5, 6):
        raise _invalid(expr, f"schedule needs 5 fields (min hour dom month dow) or 6 fields "
                             f"(sec min hour dom month dow), not {len(fields)}")

    has_seconds = len(fields) == 6
    sec_text = fields[0] if has_seconds else "0"
    min_text, hour_text, dom_text, month_text, dow_text = fields[-5:]
    seconds = _parse_field(expr, _SECOND, sec_text)
    minutes = _parse_field(expr, _MINUTE, min_text)
    hours = _parse_field(expr, _HOUR, hour_text)
    doms = _parse_field(expr, _DOM, dom_text)
    months = _parse_field(expr, _MONTH, month_text)
    dows = _parse_field(expr, _DOW, dow_text)

    fixed_time = not (min_text.startswith("*") or hour_text.startswith("*"))
    day_or = not (dom_text.startswith("*") or dow_text.startswith("*"))

    # Days of month that exist in at least one selected month (Feb 29 does).
    longest = max(_MONTH_MAX_DAYS[m] for m in months)
    possible_doms = tuple(d for d in doms if d <= longest)
    all_doms = possible_doms == tuple(range(1, 32))
    all_dows = len(dows) == 7
    if day_or:
        # Either field suffices. Impossible days of month are dropped so croniter's
        # day-of-month branch never searches 50 years for a 31st of February.
        if not possible_doms:
            cron_dom, cron_dow, cron_day_or = "*", _field_text(dows, _DOW), False
        elif all_doms or all_dows:
            cron_dom, cron_dow, cron_day_or = "*", "*", False
        else:
            cron_dom, cron_dow, cron_day_or = _field_text(possible_doms, _DOM), _field_text(dows, _DOW), True
    else:
        # Both must match. A (month, day) pair that exists at all falls on every
        # weekday within 28 years, so existence of the pair decides possibility.
        if not possible_doms:
            raise _invalid(expr, f"schedule never fires: day(s) {','.join(map(str, doms))} "
                                 f"do not exist in month(s) {','.join(map(str, months))}")
        cron_dom = "*" if all_doms else _field_text(possible_doms, _DOM)
        cron_dow = "*" if all_dows else _field_text(dows, _DOW)
        cron_day_or = False

    parts = [_field_text(minutes, _MINUTE), _field_text(hours, _HOUR), cron_dom,
             _field_text(months, _MONTH), cron_dow]
    if has_seconds:
        parts.insert(0, _field_text(seconds, _SECOND))
    croniter_expr = " ".join(parts)
    try:
        template = croniter(croniter_expr, datetime(2000, 1, 1), ret_type=datetime,
                            day_or=cron_day_or, second_at_beginning=has_seconds)
    except (CroniterError, ValueError) as exc:  # pragma: no cover - our output is plain lists
        raise _invalid(expr, f"schedule is not valid: {exc}") from None

    return CronSchedule(
        expression=normalized,
        fields=fields,
        has_seconds=has_seconds,
        fixed_time=fixed_time,
        day_or=day_or,
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days_of_month=doms,
        months=months,
        days_of_week=dows,
        croniter_expr=croniter_expr,
        croniter_day_or=cron_day_or,
        _template=template,
    )


# ------------------------------------------------------------------------ time zones


def load_timezone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. ``"Europe/Berlin"``, ``"UTC"``).

    Raises:
        InvalidSchedule: not a string, empty, a path (absolute, ``..``), or unknown.
            ``details={"timezone": ...}``.
    """
    if not isinstance(name, str):
        raise InvalidSchedule(f"time zone must be a string, not {type(name).__name__}",
                              details={"timezone": repr(name)[:MAX_TIMEZONE_LENGTH]})
    return _load_timezone_cached(name)


@functools.lru_cache(maxsize=1024)
def _load_timezone_cached(name: str) -> ZoneInfo:
    def invalid(message: str) -> InvalidSchedule:
        return InvalidSchedule(message, details={"timezone": name[:MAX_TIMEZONE_LENGTH]})

    if not name:
        raise invalid("time zone is empty")
    if (len(name) > MAX_TIMEZONE_LENGTH or not _TZ_NAME_RE.fullmatch(name)
            or ".." in name or name.startswith("/") or name == "localtime"):
        raise invalid(f"{name[:MAX_TIMEZONE_LENGTH]!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        raise invalid(f"unknown time zone {name!r}") from None


def _zone(tz: str | ZoneInfo) -> tzinfo:
    if isinstance(tz, str):
        return load_timezone(tz)
    if isinstance(tz, (ZoneInfo, timezone)):
        return tz
    raise InvalidSchedule(f"time zone must be an IANA name or a ZoneInfo, not {type(tz).__name__}",
                          details={"timezone": repr(tz)[:MAX_TIMEZONE_LENGTH]})


# A transition is (instant, offset before, offset after); the instant is the first
# one (whole seconds, UTC) with the new offset.
_Transition = tuple[datetime, timedelta, timedelta]
_SAMPLE_STEP = 6 * 3600  # seconds; two transitions this close that cancel out are not seen
_FIRST_INSTANT = datetime.min.replace(tzinfo=_UTC) + timedelta(days=1)
_LAST_INSTANT = datetime.max.replace(tzinfo=_UTC, microsecond=0) - timedelta(days=1)


def _utcoffset(local: datetime) -> timedelta:
    """The UTC offset of an aware datetime (always defined for ZoneInfo and fixed zones)."""
    offset = local.utcoffset()
    if offset is None:  # pragma: no cover - only a broken custom tzinfo returns None
        raise ValueError(f"time zone {local.tzinfo!r} gives no UTC offset")
    return offset


def _epoch_seconds(instant: datetime) -> int:
    return int((instant - _EPOCH).total_seconds())


@functools.lru_cache(maxsize=16384)
def _year_transitions(tz: tzinfo, year: int) -> tuple[tuple[datetime, ...], tuple[_Transition, ...]]:
    """The UTC-offset changes of `tz` with instants in UTC calendar year `year`.

    zoneinfo does not expose its transition table, so the offset is sampled every
    six hours and each change located to the second by bisection. Cached; about a
    millisecond per (zone, year) the first time.
    """
    if isinstance(tz, timezone) or not 1 <= year <= 9999:
        return (), ()

    def offset(seconds: int) -> timedelta:
        return _utcoffset((_EPOCH + timedelta(seconds=seconds)).astimezone(tz))

    # [start, end) in epoch seconds, clipped to what datetime can represent (with
    # a day of margin for the local-time conversion).
    start = _epoch_seconds(max(datetime(year, 1, 1, tzinfo=_UTC), _FIRST_INSTANT))
    end = _epoch_seconds(datetime(year + 1, 1, 1, tzinfo=_UTC) if year < 9999 else _LAST_INSTANT)
    times: list[datetime] = []
    records: list[_Transition] = []
    point = start - 1
    point_offset = offset(point)
    while point < end - 1:
        sample = min(point + _SAMPLE_STEP, end - 1)
        sample_offset = offset(sample)
        low, low_offset = point, point_offset
        while sample_offset != low_offset:  # a change in (low, sample]
            a, b = low, sample
            while b - a > 1:
                middle = (a + b) // 2
                if offset(middle) == low_offset:
                    a = middle
                else:
                    b = middle
            new_offset = offset(b)
            instant = _EPOCH + timedelta(seconds=b)
            times.append(instant)
            records.append((instant, low_offset, new_offset))
            low, low_offset = b, new_offset
        point, point_offset = sample, sample_offset
    return tuple(times), tuple(records)


def _next_transition(tz: tzinfo, after: datetime, limit: datetime) -> _Transition | None:
    """The first transition with ``after < instant <= limit`` (UTC datetimes), if any."""
    for year in range(after.year, limit.year + 1):
        times, records = _year_transitions(tz, year)
        i = bisect.bisect_right(times, after)
        if i < len(times):
            return records[i] if times[i] <= limit else None
    return None


def _prev_transition(tz: tzinfo, at: datetime) -> _Transition | None:
    """The last transition with ``instant <= at`` in this or the previous UTC year."""
    for year in (at.year, at.year - 1):
        times, records = _year_transitions(tz, year)
        i = bisect.bisect_right(times, at)
        if i:
            return records[i - 1]
    return None


# ---------------------------------------------------------------------- fire times


class _Exhausted(Exception):
    """No fire instant within datetime's range (or croniter's search horizon)."""


def _wall_after(schedule: CronSchedule, wall: datetime) -> datetime:
    """The first naive wall-clock match strictly after the naive `wall`: one croniter step.

    `wall` is floored to the schedule's resolution first (matches are whole seconds
    or minutes, so this changes nothing) which keeps croniter's float timestamps exact.
    """
    if schedule.has_seconds:
        start = wall.replace(microsecond=0)
    else:
        start = wall.replace(second=0, microsecond=0)
    iterator = copy.copy(schedule._template)  # croniter keeps state; the template is shared
    try:
        match: datetime = iterator.get_next(datetime, start_time=start)
    except (CroniterError, OverflowError, ValueError) as exc:
        raise _Exhausted(str(exc)) from None
    return match


def _naive(instant: datetime, offset: timedelta) -> datetime:
    """The wall clock at UTC `instant` under `offset`."""
    return (instant + offset).replace(tzinfo=None)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    """The UTC instant of naive `wall` under `offset`."""
    return (wall - offset).replace(tzinfo=_UTC)


def _next_instant(schedule: CronSchedule, tz: tzinfo, after: datetime) -> datetime:
    """The first fire instant strictly after `after` (aware, UTC)."""
    try:
        return _next_instant_unchecked(schedule, tz, after)
    except OverflowError as exc:
        raise _Exhausted(str(exc)) from None


def _next_instant_unchecked(schedule: CronSchedule, tz: tzinfo, after: datetime) -> datetime:
    fixed = schedule.fixed_time
    memo_start, memo_match = datetime.max, datetime.max  # memo_match = first match > memo_start

    def first_at_or_after(wall: datetime) -> datetime:
        nonlocal memo_start, memo_match
        if memo_start < wall <= memo_match:
            return memo_match
        memo_start = wall - _TICK
        memo_match = _wall_after(schedule, memo_start)
        return memo_match

    # The segment containing `after`: offset `offset` until the next transition.
    offset = _utcoffset(after.astimezone(tz))
    start = _naive(after, offset)
    if fixed:
        previous = _prev_transition(tz, after)
        if previous is not None and previous[1] > previous[2]:
            # A fall-back: wall times before `repeat_end` are second occurrences
            # here, and a fixed-time schedule fired them at their first.
            repeat_end = _naive(previous[0], previous[1])
            if start < repeat_end:
                start = repeat_end - _TICK
    memo_start = start
    memo_match = wall = _wall_after(schedule, start)
    candidate = _instant(wall, offset)
    transition = _next_transition(tz, after, candidate)

    # Slow path: a transition lies between `after` and the candidate, so the
    # candidate was computed with the wrong offset. Walk segment by segment.
    while transition is not None:
        at, before, now_offset = transition
        if fixed and now_offset > before and first_at_or_after(_naive(at, before)) < _naive(at, now_offset):
            # Spring-forward: matches inside the skipped wall times fire once, at
            # the first instant after the gap -- the transition instant itself.
            return at
        if fixed:
            # Past the gap, or past the wall times a fall-back repeats.
            lowest = _naive(at, max(before, now_offset))
        else:
            # Every wall time of the segment, including the repeated ones.
            lowest = _naive(at, now_offset)
        wall = first_at_or_after(lowest)
        candidate = _instant(wall, now_offset)
        transition = _next_transition(tz, at, candidate)
    return candidate


def _aware_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with tzinfo), got naive {value.isoformat()}")
    return value.astimezone(_UTC)


def next_fire(expr: str | CronSchedule, tz: str | ZoneInfo, after: datetime) -> datetime:
    """The first fire instant strictly after `after`, as an aware UTC datetime.

    Args:
        expr: a cron expression or a parsed `CronSchedule`.
        tz: the job's IANA time zone (name or ZoneInfo); wall times are read there.
        after: an aware datetime in any time zone.

    Raises:
        InvalidSchedule: `expr` or `tz` is invalid.
        ValueError: `after` is naive, or no fire instant exists before year 9999.
    """
    schedule = parse_schedule(expr)
    zone = _zone(tz)
    start = _aware_utc(after, "after")
    try:
        return _next_instant(schedule, zone, start)
    except _Exhausted:
        raise ValueError(f"schedule {schedule.expression!r} has no fire time after "
                         f"{start.isoformat()} within the supported date range") from None


def fires_between(expr: str | CronSchedule, tz: str | ZoneInfo, after: datetime, until: datetime,
                  limit: int) -> list[datetime]:
    """The fire instants in ``(after, until]``, ascending, at most `limit` of them (UTC).

    Used for misfire catch-up: the caller decides what to do with more than `limit`.

    Raises:
        InvalidSchedule: `expr` or `tz` is invalid.
        ValueError: `after` or `until` is naive.
    """
    schedule = parse_schedule(expr)
    zone = _zone(tz)
    cursor = _aware_utc(after, "after")
    end = _aware_utc(until, "until")
    fires: list[datetime] = []
    while len(fires) < limit:
        try:
            cursor = _next_instant(schedule, zone, cursor)
        except _Exhausted:
            break
        if cursor > end:
            break
        fires.append(cursor)
    return fires


def upcoming(expr: str | CronSchedule, tz: str | ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire instants strictly after `after`, ascending (UTC).

    Fewer only if the date range (year 9999) runs out.

    Raises:
        InvalidSchedule: `expr` or `tz` is invalid.
        ValueError: `after` is naive.
    """
    schedule = parse_schedule(expr)
    zone = _zone(tz)
    cursor = _aware_utc(after, "after")
    fires: list[datetime] = []
    while len(fires) < count:
        try:
            cursor = _next_instant(schedule, zone, cursor)
        except _Exhausted:
            break
        fires.append(cursor)
    return fires


# ------------------------------------------------------------------ shortest interval

_DAY_S = 86400
#: The Gregorian calendar, weekdays included, repeats every 400 years (146,097
#: days, a whole number of weeks): a look-ahead over one cycle sees every gap
#: between matching days that any year can have.
_CYCLE_START, _CYCLE_YEARS = 2000, 400


def shortest_interval(expr: str | CronSchedule) -> timedelta:
    """The shortest wall-clock time between two consecutive fires of `expr`.

    Pure and exact: the time-of-day matches are a product of the second, minute
    and hour sets, so the shortest gap inside a day comes from the sets' smallest
    steps; the gap across days is the shortest distance between two matching
    days (found over one 400-year Gregorian cycle, through 14 precomputed year
    types, so ``0 0 29 2 *`` gives four years) less the span of a day's fires.
    Cached by schedule; at most a few milliseconds the first time.

    Wall clock, as the schedule is written: on a DST transition day one real
    interval of a fixed-time schedule can be shorter by the zone's shift (e.g.
    ``30 1,2 * * *`` fires 01:30 and, 02:30 being skipped, 03:00 -- 30 minutes).

    Raises:
        InvalidSchedule: `expr` is invalid.
    """
    return timedelta(seconds=_shortest_interval_s(parse_schedule(expr).expression))


def _smallest_step(values: tuple[int, ...]) -> int | None:
    """The smallest difference of two neighbours in the ascending `values` (None for one value)."""
    steps = [b - a for a, b in itertools.pairwise(values)]
    return min(steps) if steps else None


@functools.lru_cache(maxsize=4096)
def _shortest_interval_s(expression: str) -> int:
    schedule = parse_schedule(expression)
    seconds, minutes, hours = schedule.seconds, schedule.minutes, schedule.hours
    candidates: list[int] = []
    # Neighbouring fires inside one minute, across two minutes of one hour, across two hours.
    if (step := _smallest_step(seconds)) is not None:
        candidates.append(step)
    if (step := _smallest_step(minutes)) is not None:
        candidates.append(step * 60 - (seconds[-1] - seconds[0]))
    if (step := _smallest_step(hours)) is not None:
        last_in_hour = minutes[-1] * 60 + seconds[-1]
        first_in_hour = minutes[0] * 60 + seconds[0]
        candidates.append(step * 3600 - (last_in_hour - first_in_hour))
    # The last fire of one matching day to the first of the next.
    day_span = (hours[-1] * 3600 + minutes[-1] * 60 + seconds[-1]) - (hours[0] * 3600 + minutes[0] * 60 + seconds[0])
    candidates.append(_shortest_day_gap(schedule) * _DAY_S - day_span)
    return min(candidates)


def _day_matches(schedule: CronSchedule, month: int, day: int, weekday: int) -> bool:
    """The Vixie day rule for one calendar day (`weekday`: Sunday 0)."""
    if month not in schedule.months:
        return False
    dom = day in schedule.days_of_month
    dow = weekday in schedule.days_of_week
    return (dom or dow) if schedule.day_or else (dom and dow)


def _year_matches(schedule: CronSchedule, leap: bool, first_weekday: int) -> tuple[int, ...]:
    """The matching days of a year (0-based day of year), given its type: leap or
    not and the weekday of January 1st (Sunday 0)."""
    matches: list[int] = []
    day_of_year = 0
    for month in range(1, 13):
        length = 28 + leap if month == 2 else _MONTH_MAX_DAYS[month]
        for day in range(1, length + 1):
            if _day_matches(schedule, month, day, (first_weekday + day_of_year) % 7):
                matches.append(day_of_year)
            day_of_year += 1
    return tuple(matches)


def _shortest_day_gap(schedule: CronSchedule) -> int:
    """The fewest days between two consecutive matching days, over one Gregorian cycle
    (and on to the first match of the next cycle, which repeats the first)."""
    types: dict[tuple[bool, int], tuple[int, ...]] = {}
    best: int | None = None
    previous: int | None = None  # absolute day number of the last match seen
    start = datetime(_CYCLE_START, 1, 1).toordinal()
    day_number = 0
    for year in range(_CYCLE_START, _CYCLE_START + _CYCLE_YEARS + 1):
        leap = calendar.isleap(year)
        key = (leap, (datetime(year, 1, 1).toordinal() - start + 6) % 7)  # 2000-01-01 was a Saturday
        if key not in types:
            types[key] = _year_matches(schedule, *key)
        matches = types[key]
        if matches:
            if previous is not None:
                best = _min(best, day_number + matches[0] - previous)
            if (step := _smallest_step(matches)) is not None:
                best = _min(best, step)
            previous = day_number + matches[-1]
            if best == 1:
                break
        day_number += 366 if leap else 365
    if best is None:  # pragma: no cover - parse_schedule rejects schedules that never fire
        raise _invalid(schedule.expression, "schedule never fires")
    return best


def _min(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)
