"""shared/cron.py: syntax, validation, the Vixie day rule, time zones and DST (SPEC §4).

Every expected instant is written out in UTC. Transitions used (2026):

    Europe/Berlin      2026-03-29 02:00 CET  -> 03:00 CEST  at 01:00Z (spring-forward)
                       2026-10-25 03:00 CEST -> 02:00 CET   at 01:00Z (fall-back)
    America/New_York   2026-03-08 02:00 EST  -> 03:00 EDT   at 07:00Z (spring-forward)
                       2026-11-01 02:00 EDT  -> 01:00 EST   at 06:00Z (fall-back)
    Australia/Sydney   2026-04-05 03:00 AEDT -> 02:00 AEST  at 2026-04-04 16:00Z (fall-back)
                       2026-10-04 02:00 AEST -> 03:00 AEDT  at 2026-10-03 16:00Z (spring-forward)
"""

from __future__ import annotations

import bisect
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cronhive import cron
from cronhive.errors import InvalidSchedule

UTC = UTC


def utc(text: str) -> datetime:
    """``"2026-03-29T01:00"`` (or with seconds) as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def utcs(*texts: str) -> list[datetime]:
    return [utc(t) for t in texts]


# ----------------------------------------------------------------------------- syntax

SYNTAX_CASES = [
    # (expression, after (UTC), expected next fires (UTC)) -- time zone UTC
    ("*/15 * * * *", "2026-01-01T00:00", ["2026-01-01T00:15", "2026-01-01T00:30", "2026-01-01T00:45"]),
    ("5,10 * * * *", "2026-01-01T00:00", ["2026-01-01T00:05", "2026-01-01T00:10", "2026-01-01T01:05"]),
    ("0 9-11 * * *", "2026-01-01T00:00", ["2026-01-01T09:00", "2026-01-01T10:00", "2026-01-01T11:00",
                                          "2026-01-02T09:00"]),
    ("0 9-17/4 * * *", "2026-01-01T00:00", ["2026-01-01T09:00", "2026-01-01T13:00", "2026-01-01T17:00",
                                            "2026-01-02T09:00"]),
    ("10-20/5,45 3 * * *", "2026-01-01T00:00", ["2026-01-01T03:10", "2026-01-01T03:15", "2026-01-01T03:20",
                                                "2026-01-01T03:45", "2026-01-02T03:10"]),
    ("5-5 * * * *", "2026-01-01T00:00", ["2026-01-01T00:05", "2026-01-01T01:05"]),  # croniter: whole cycle
    ("0 12 * jan,jul mon-fri", "2026-01-29T00:00", ["2026-01-29T12:00", "2026-01-30T12:00", "2026-07-01T12:00"]),
    ("0 12 * JAN-feb Sat", "2026-01-30T00:00", ["2026-01-31T12:00", "2026-02-07T12:00"]),
    ("0 0 * * sun", "2026-01-01T00:00", ["2026-01-04T00:00", "2026-01-11T00:00"]),
    ("0 0 * * 0", "2026-01-01T00:00", ["2026-01-04T00:00", "2026-01-11T00:00"]),
    ("0 0 * * 7", "2026-01-01T00:00", ["2026-01-04T00:00", "2026-01-11T00:00"]),
    ("0 0 * * 5-7", "2026-01-01T00:00", ["2026-01-02T00:00", "2026-01-03T00:00", "2026-01-04T00:00",
                                         "2026-01-09T00:00"]),
    ("0 0 * * */3", "2026-01-01T00:00", ["2026-01-03T00:00", "2026-01-04T00:00", "2026-01-07T00:00"]),
    ("0 0 1 */4 *", "2026-01-01T00:00", ["2026-05-01T00:00", "2026-09-01T00:00", "2027-01-01T00:00"]),
    ("0 0 31 * *", "2026-01-31T00:00", ["2026-03-31T00:00", "2026-05-31T00:00"]),
    # six fields, seconds first
    ("*/5 * * * * *", "2026-01-01T00:00", ["2026-01-01T00:00:05", "2026-01-01T00:00:10", "2026-01-01T00:00:15"]),
    ("30 0 8 * * *", "2026-01-01T00:00", ["2026-01-01T08:00:30", "2026-01-02T08:00:30"]),
    ("0,30 * * * * *", "2026-01-01T00:00:30", ["2026-01-01T00:01:00", "2026-01-01T00:01:30"]),
    ("* * * * * *", "2026-01-01T23:59:58", ["2026-01-01T23:59:59", "2026-01-02T00:00:00", "2026-01-02T00:00:01"]),
    # leap day
    ("0 0 29 2 *", "2026-01-01T00:00", ["2028-02-29T00:00", "2032-02-29T00:00"]),
    ("0 0 29 2 *", "2096-03-01T00:00", ["2104-02-29T00:00"]),  # 2100 is not a leap year
]


@pytest.mark.parametrize(("expr", "after", "expected"), SYNTAX_CASES)
def test_syntax(expr: str, after: str, expected: list[str]) -> None:
    assert cron.upcoming(expr, "UTC", utc(after), len(expected)) == utcs(*expected)


MACRO_CASES = [
    ("@yearly", "0 0 1 1 *", ["2027-01-01T00:00", "2028-01-01T00:00"]),
    ("@annually", "0 0 1 1 *", ["2027-01-01T00:00", "2028-01-01T00:00"]),
    ("@monthly", "0 0 1 * *", ["2026-02-01T00:00", "2026-03-01T00:00"]),
    ("@weekly", "0 0 * * 0", ["2026-01-04T00:00", "2026-01-11T00:00"]),
    ("@daily", "0 0 * * *", ["2026-01-02T00:00", "2026-01-03T00:00"]),
    ("@midnight", "0 0 * * *", ["2026-01-02T00:00", "2026-01-03T00:00"]),
    ("@hourly", "0 * * * *", ["2026-01-01T01:00", "2026-01-01T02:00"]),
]


@pytest.mark.parametrize(("macro", "expansion", "expected"), MACRO_CASES)
def test_macros(macro: str, expansion: str, expected: list[str]) -> None:
    after = utc("2026-01-01T00:00")  # itself a fire instant of every macro: strictly after
    schedule = cron.parse_schedule(macro)
    assert schedule.expression == macro
    assert schedule.fields == tuple(expansion.split())
    assert schedule.fixed_time is (macro != "@hourly")
    assert cron.upcoming(macro, "UTC", after, 2) == utcs(*expected)
    assert cron.upcoming(macro.upper(), "UTC", after, 2) == utcs(*expected)
    assert cron.upcoming(expansion, "UTC", after, 2) == utcs(*expected)


@pytest.mark.parametrize(("text", "normalized"), [
    ("  0  9\t* * MON-fri ", "0 9 * * mon-fri"),
    ("@Daily", "@daily"),
    ("*/5 * * * * *", "*/5 * * * * *"),
])
def test_normalized_expression(text: str, normalized: str) -> None:
    assert cron.parse_schedule(text).expression == normalized


@pytest.mark.parametrize(("expr", "has_seconds", "fixed_time"), [
    ("30 2 * * *", False, True),
    ("0,30 2-3 * * *", False, True),
    ("0-59 0-23 * * *", False, True),  # only a leading '*' makes a wildcard
    ("30 * * * *", False, False),
    ("*/15 2 * * *", False, False),
    ("* * * * * *", True, False),
    ("* 30 2 * * *", True, True),  # the seconds field does not count
    ("0 */2 3 * * *", True, False),
    ("@daily", False, True),
    ("@hourly", False, False),
])
def test_schedule_kind(expr: str, has_seconds: bool, fixed_time: bool) -> None:
    schedule = cron.parse_schedule(expr)
    assert (schedule.has_seconds, schedule.fixed_time) == (has_seconds, fixed_time)


def test_parse_is_cached_and_accepts_a_schedule() -> None:
    schedule = cron.parse_schedule("0 3 * * *")
    assert cron.parse_schedule("0 3 * * *") is schedule
    assert cron.parse_schedule(schedule) is schedule
    assert cron.next_fire(schedule, "UTC", utc("2026-01-01T00:00")) == utc("2026-01-01T03:00")


# -------------------------------------------------------------------- Vixie day rule

VIXIE_CASES = [
    # dom '*/2' starts with '*': unrestricted, so AND -- odd days that are Mondays
    ("0 0 */2 * 1", False, ["2026-01-05", "2026-01-19", "2026-02-09", "2026-02-23", "2026-03-09"]),
    # both restricted: OR -- the 1st of each month and every Monday
    ("0 0 1 * 1", True, ["2026-01-01", "2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26",
                         "2026-02-01", "2026-02-02"]),
    # OR: days 1-7 and every Friday
    ("0 0 1-7 * fri", True, ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05",
                             "2026-01-06", "2026-01-07", "2026-01-09", "2026-01-16", "2026-01-23",
                             "2026-01-30", "2026-02-01"]),
    # dow '*' : the 13th only
    ("0 0 13 * *", False, ["2026-01-13", "2026-02-13"]),
    # dow '*/1' starts with '*': AND -- the 13th when it is any day -> the 13th
    ("0 0 13 * */1", False, ["2026-01-13", "2026-02-13"]),
    # OR with a day of month February never has: Mondays of February only
    ("0 0 31 2 mon", True, ["2026-02-02", "2026-02-09", "2026-02-16", "2026-02-23", "2027-02-01"]),
    # OR where one side is every day: every day
    ("0 0 1-31 * 1", True, ["2026-01-01", "2026-01-02", "2026-01-03"]),
]


@pytest.mark.parametrize(("expr", "day_or", "dates"), VIXIE_CASES)
def test_vixie_day_rule(expr: str, day_or: bool, dates: list[str]) -> None:
    assert cron.parse_schedule(expr).day_or is day_or
    after = utc("2025-12-31T12:00")
    assert cron.upcoming(expr, "UTC", after, len(dates)) == [utc(d + "T00:00") for d in dates]


# ------------------------------------------------------------------------ validation

INVALID_EXPRESSIONS = [
    "",
    "   ",
    "* * * *",
    "* * * * * * *",
    "0 0 1 1 * 2026",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * 32 * *",
    "* * * 0 *",
    "* * * 13 *",
    "* * * * 8",
    "60 0 0 * * *",  # six fields: seconds first, 60 is out of range
    "0 0 L * *",
    "0 0 * * 5L",
    "0 0 LW * *",
    "0 0 15W * *",
    "0 0 * * 1#2",
    "H * * * *",
    "H(0-29) * * * *",
    "0 0 ? * *",
    "@reboot",
    "@every 5m",
    "@ daily",
    "@daily 0",
    "*/0 * * * *",
    "0-10/0 * * * *",
    "*/61 * * * *",
    "5/10 * * * *",  # a step needs '*' or a range
    "*/5/2 * * * *",
    "*-5 * * * *",
    "5-1 * * * *",  # reversed range
    "0 0 * * mon-sun",  # sun is 0: reversed
    "0 0 * dec-jan *",
    "1,,2 * * * *",
    "1, * * * *",
    ",1 * * * *",
    "-1 * * * *",
    "+1 * * * *",
    "1.5 * * * *",
    "1-2-3 * * * *",
    "a * * * *",
    "0 0 * * monday",
    "0 0 * january *",
    "0 0 * * jan",  # month name in the day-of-week field
    "0 0 * mon *",  # weekday name in the month field
    "0 0 mon * *",
    "007 * * * *",
    '{"$gt": ""}',
    "$where * * * *",
    "０ 0 * * *",  # fullwidth digit
    "0 0 * * \u00e9",
    "0\x00 0 * * *",
    "0 0 * * *\n0 0 * * *",
    "0 0\n* * *",
    "0 " * 200 + "*",  # over 256 characters
    "0 0 * * *" + " " * 300,
]


@pytest.mark.parametrize("expr", INVALID_EXPRESSIONS)
def test_invalid_expressions(expr: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        cron.parse_schedule(expr)
    assert info.value.code == "invalid_schedule"
    assert set(info.value.details) == {"schedule"}
    assert isinstance(info.value.details["schedule"], str)
    with pytest.raises(InvalidSchedule):
        cron.next_fire(expr, "UTC", utc("2026-01-01T00:00"))


@pytest.mark.parametrize("value", [None, 5, 1.5, b"* * * * *", ["*", "*", "*", "*", "*"], {"$gt": ""},
                                   ("0", "0", "*", "*", "*")])
def test_non_string_expressions(value: object) -> None:
    with pytest.raises(InvalidSchedule) as info:
        cron.parse_schedule(value)  # type: ignore[arg-type]
    assert "schedule" in info.value.details


@pytest.mark.parametrize("expr", [
    "0 0 31 2 *",
    "0 0 30 2 *",
    "0 0 30,31 2 *",
    "0 0 31 4,6,9,11 *",
    "0 0 31 apr,jun,sep,nov */2",  # dow starts with '*': AND, still never
    "0 0 0 31 2 *",  # six fields
])
def test_impossible_expressions_rejected(expr: str) -> None:
    with pytest.raises(InvalidSchedule, match="never fires"):
        cron.parse_schedule(expr)


@pytest.mark.parametrize(("expr", "expected"), [
    ("0 0 29 2 *", "2028-02-29T00:00"),
    ("0 0 31 1-2 *", "2026-01-31T00:00"),
    ("0 0 30,31 2,4 *", "2026-04-30T00:00"),
    ("0 0 29 2 */7", "2032-02-29T00:00"),  # AND (dow starts with "*"): a Sunday 29 February
    ("0 0 29 2 0", "2026-02-01T00:00"),  # OR: 29 February or any Sunday of February
])
def test_rare_but_possible(expr: str, expected: str) -> None:
    assert cron.next_fire(expr, "UTC", utc("2026-01-01T00:00")) == utc(expected)


# ------------------------------------------------------------------------ time zones

@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney",
                                  "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_load_timezone(name: str) -> None:
    assert cron.load_timezone(name) == ZoneInfo(name)


@pytest.mark.parametrize("name", ["Mars/Phobos", "../etc/passwd", "", "   ", "/etc/localtime", "localtime",
                                  "Europe/../Europe/Berlin", "Europe", "Europe/Berlin/", "Europe/Berlin\x00",
                                  "UTC ", "\u00c9urope/Paris", "x" * 300, None, 5, b"UTC"])
def test_bad_timezones(name: object) -> None:
    with pytest.raises(InvalidSchedule) as info:
        cron.load_timezone(name)  # type: ignore[arg-type]
    assert set(info.value.details) == {"timezone"}
    with pytest.raises(InvalidSchedule):
        cron.next_fire("* * * * *", name, utc("2026-01-01T00:00"))  # type: ignore[arg-type]


def test_timezone_as_zoneinfo_and_after_in_any_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    after = datetime(2026, 6, 10, 8, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 2026-06-09T23:00Z
    fire = cron.next_fire("0 9 * * *", berlin, after)
    assert fire == utc("2026-06-10T07:00")
    assert fire.tzinfo is UTC


# ------------------------------------------------------------------------------- DST

DST_CASES = [
    # (zone, expression, after (UTC), expected fires (UTC))
    # --- Europe/Berlin spring-forward 2026-03-29 (02:00-03:00 skipped, 01:00Z)
    ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:30"]),
    ("Europe/Berlin", "0,30 2 * * *", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:00",
                                                           "2026-03-30T00:30"]),
    ("Europe/Berlin", "0 2,3 * * *", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:00",
                                                          "2026-03-30T01:00"]),  # 02:00 and 03:00: one fire
    ("Europe/Berlin", "*/15 2 * * *", "2026-03-28T12:00", ["2026-03-30T00:00", "2026-03-30T00:15"]),
    ("Europe/Berlin", "30 * * * *", "2026-03-28T23:45", ["2026-03-29T00:30", "2026-03-29T01:30",
                                                         "2026-03-29T02:30"]),
    # --- Europe/Berlin fall-back 2026-10-25 (02:00-03:00 twice, 01:00Z)
    ("Europe/Berlin", "30 2 * * *", "2026-10-24T12:00", ["2026-10-25T00:30", "2026-10-26T01:30"]),
    ("Europe/Berlin", "0 2 * * *", "2026-10-24T12:00", ["2026-10-25T00:00", "2026-10-26T01:00"]),
    ("Europe/Berlin", "30 * * * *", "2026-10-24T23:45", ["2026-10-25T00:30", "2026-10-25T01:30",
                                                         "2026-10-25T02:30"]),
    ("Europe/Berlin", "*/15 2 * * *", "2026-10-24T12:00", [
        "2026-10-25T00:00", "2026-10-25T00:15", "2026-10-25T00:30", "2026-10-25T00:45",  # CEST
        "2026-10-25T01:00", "2026-10-25T01:15", "2026-10-25T01:30", "2026-10-25T01:45",  # CET
        "2026-10-26T01:00"]),
    # --- America/New_York spring-forward 2026-03-08 (02:00-03:00 skipped, 07:00Z)
    ("America/New_York", "30 2 * * *", "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:30"]),
    ("America/New_York", "*/15 2 * * *", "2026-03-07T12:00", ["2026-03-09T06:00", "2026-03-09T06:15"]),
    ("America/New_York", "30 * * * *", "2026-03-08T06:00", ["2026-03-08T06:30", "2026-03-08T07:30"]),
    # --- America/New_York fall-back 2026-11-01 (01:00-02:00 twice, 06:00Z)
    ("America/New_York", "30 1 * * *", "2026-10-31T12:00", ["2026-11-01T05:30", "2026-11-02T06:30"]),
    ("America/New_York", "30 * * * *", "2026-11-01T04:45", ["2026-11-01T05:30", "2026-11-01T06:30",
                                                            "2026-11-01T07:30"]),
    ("America/New_York", "*/15 1 * * *", "2026-10-31T12:00", [
        "2026-11-01T05:00", "2026-11-01T05:15", "2026-11-01T05:30", "2026-11-01T05:45",  # EDT
        "2026-11-01T06:00", "2026-11-01T06:15", "2026-11-01T06:30", "2026-11-01T06:45",  # EST
        "2026-11-02T06:00"]),
    # --- Australia/Sydney fall-back 2026-04-05 (02:00-03:00 twice, 2026-04-04T16:00Z)
    ("Australia/Sydney", "30 2 * * *", "2026-04-04T00:00", ["2026-04-04T15:30", "2026-04-05T16:30"]),
    ("Australia/Sydney", "30 * * * *", "2026-04-04T14:45", ["2026-04-04T15:30", "2026-04-04T16:30",
                                                            "2026-04-04T17:30"]),
    # --- Australia/Sydney spring-forward 2026-10-04 (02:00-03:00 skipped, 2026-10-03T16:00Z)
    ("Australia/Sydney", "30 2 * * *", "2026-10-03T00:00", ["2026-10-03T16:00", "2026-10-04T15:30"]),
    ("Australia/Sydney", "*/15 2 * * *", "2026-10-03T00:00", ["2026-10-04T15:00", "2026-10-04T15:15"]),
    ("Australia/Sydney", "30 * * * *", "2026-10-03T15:00", ["2026-10-03T15:30", "2026-10-03T16:30"]),
    # --- seconds: the skipped 02:30:30 fires once at the end of the gap; the repeated one once
    ("Europe/Berlin", "30 30 2 * * *", "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:30:30"]),
    ("Europe/Berlin", "30 30 2 * * *", "2026-10-24T12:00", ["2026-10-25T00:30:30", "2026-10-26T01:30:30"]),
]


@pytest.mark.parametrize(("zone", "expr", "after", "expected"), DST_CASES)
def test_dst(zone: str, expr: str, after: str, expected: list[str]) -> None:
    assert cron.upcoming(expr, zone, utc(after), len(expected)) == utcs(*expected)


NEW_YORK = ZoneInfo("America/New_York")

AFTER_IN_REPEATED_HOUR = [
    # right after the first 01:30 (EDT, 05:30Z)
    ("30 1 * * *", utc("2026-11-01T05:30:01"), "2026-11-02T06:30"),  # fixed: the repeat does not fire
    ("30 * * * *", utc("2026-11-01T05:30:01"), "2026-11-01T06:30"),  # wildcard: 01:30 EST fires
    ("*/15 1 * * *", utc("2026-11-01T05:30:01"), "2026-11-01T05:45"),
    ("45 1 * * *", utc("2026-11-01T05:30:01"), "2026-11-01T05:45"),  # first 01:45 still ahead
    # 01:10 EST (second occurrence), given in local time with fold=1
    ("15 1 * * *", datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=1), "2026-11-02T06:15"),
    ("15 * * * *", datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=1), "2026-11-01T06:15"),
    ("0 2 * * *", datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=1), "2026-11-01T07:00"),
    # 01:10 EDT (first occurrence, fold=0)
    ("15 1 * * *", datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=0), "2026-11-01T05:15"),
    ("15 * * * *", datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=0), "2026-11-01T05:15"),
]


@pytest.mark.parametrize(("expr", "after", "expected"), AFTER_IN_REPEATED_HOUR)
def test_after_inside_repeated_hour(expr: str, after: datetime, expected: str) -> None:
    assert cron.next_fire(expr, "America/New_York", after) == utc(expected)


TRANSITIONS = [
    ("Europe/Berlin", "2026-03-29T01:00"),
    ("Europe/Berlin", "2026-10-25T01:00"),
    ("America/New_York", "2026-03-08T07:00"),
    ("America/New_York", "2026-11-01T06:00"),
    ("Australia/Sydney", "2026-04-04T16:00"),
    ("Australia/Sydney", "2026-10-03T16:00"),
]


@pytest.mark.parametrize(("zone", "transition"), TRANSITIONS)
@pytest.mark.parametrize(("expr", "step"), [("*/15 * * * *", timedelta(minutes=15)),
                                            ("0 * * * *", timedelta(hours=1))])
def test_wildcard_monotonic_across_transition(zone: str, transition: str, expr: str, step: timedelta) -> None:
    # A wildcard schedule follows the wall clock: across a one-hour shift every
    # real quarter hour (hour) still is one, so the fires are evenly spaced.
    start = utc(transition) - timedelta(hours=6)
    fires = cron.upcoming(expr, zone, start, int(timedelta(hours=12) / step))
    assert fires[0] == start + step
    assert all(b - a == step for a, b in itertools.pairwise(fires))


@pytest.mark.parametrize(("zone", "transition"), TRANSITIONS)
def test_every_second_monotonic_across_transition(zone: str, transition: str) -> None:
    start = utc(transition) - timedelta(seconds=300)
    fires = cron.upcoming("* * * * * *", zone, start, 600)
    assert fires == [start + timedelta(seconds=i) for i in range(1, 601)]


@pytest.mark.parametrize(("zone", "transition"), TRANSITIONS)
def test_fixed_time_monotonic_across_transition(zone: str, transition: str) -> None:
    start = utc(transition) - timedelta(days=3)
    fires = cron.upcoming("30 2 * * *", zone, start, 6)
    assert all(a < b for a, b in itertools.pairwise(fires))
    # exactly one fire per local calendar day
    tz = ZoneInfo(zone)
    days = [f.astimezone(tz).date() for f in fires]
    assert days == [days[0] + timedelta(days=i) for i in range(6)]


# Brute force: walk every UTC minute and apply the rules literally.

def _matches(schedule: cron.CronSchedule, wall: datetime) -> bool:
    if wall.minute not in schedule.minutes or wall.hour not in schedule.hours:
        return False
    if wall.month not in schedule.months:
        return False
    dom = wall.day in schedule.days_of_month
    dow = wall.isoweekday() % 7 in schedule.days_of_week
    return (dom or dow) if schedule.day_or else (dom and dow)


def _brute_force(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    schedule, tz = cron.parse_schedule(expr), ZoneInfo(zone)
    fires: list[datetime] = []
    previous_offset = None
    instant = start
    while instant <= end:
        local = instant.astimezone(tz)
        offset, wall = local.utcoffset(), local.replace(tzinfo=None)
        if schedule.fixed_time and previous_offset is not None and offset > previous_offset:
            gap = (instant + previous_offset).replace(tzinfo=None)  # skipped wall times: [gap, wall)
            if any(_matches(schedule, gap + timedelta(minutes=m)) for m in range((wall - gap) // timedelta(minutes=1))):
                fires.append(instant)
        repeated = local.fold == 1 and wall.replace(tzinfo=tz, fold=0).utcoffset() != offset
        if _matches(schedule, wall) and not (schedule.fixed_time and repeated) and (not fires or fires[-1] != instant):
            fires.append(instant)
        previous_offset = offset
        instant += timedelta(minutes=1)
    return fires


@pytest.mark.parametrize(("zone", "transition"), [*TRANSITIONS, ("Australia/Lord_Howe", "2026-04-04T15:00"),
                                                 ("Australia/Lord_Howe", "2026-10-03T15:30")])
def test_against_brute_force(zone: str, transition: str) -> None:
    start, end = utc(transition) - timedelta(hours=5), utc(transition) + timedelta(hours=5)
    for expr in ["30 2 * * *", "0,30 2 * * *", "0 2,3 * * *", "*/15 2 * * *", "30 * * * *", "*/7 1-3 * * *",
                 "15 1 * * *", "0-59 2 * * *", "10,40 1,2,3 * * *"]:
        expected = [f for f in _brute_force(expr, zone, start, end) if f > start]
        assert cron.fires_between(expr, zone, start, end, 10_000) == expected, expr
        # and from arbitrary starting points, not only from fire instants
        for minutes in range(0, 600, 37):
            after = start + timedelta(minutes=minutes, seconds=13)
            i = bisect.bisect_right(expected, after)
            if i < len(expected):
                assert cron.next_fire(expr, zone, after) == expected[i], (expr, after)


# ---------------------------------------------------------------- next_fire contract

@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("0 3 * * *", "2026-01-01T03:00", "2026-01-02T03:00"),  # exactly on a fire: the next one
    ("0 3 * * *", "2026-01-01T02:59:59.999999", "2026-01-01T03:00"),
    ("0 3 * * *", "2026-01-01T03:00:00.000001", "2026-01-02T03:00"),
    ("*/5 * * * * *", "2026-01-01T00:00:05", "2026-01-01T00:00:10"),
    ("*/5 * * * * *", "2026-01-01T00:00:04.999999", "2026-01-01T00:00:05"),
])
def test_next_fire_is_strictly_after(expr: str, after: str, expected: str) -> None:
    assert cron.next_fire(expr, "UTC", utc(after)) == utc(expected)


def test_strictly_after_on_dst_fire_instants() -> None:
    # the gap fire of a fixed-time schedule, and each occurrence of a repeated wall time
    assert cron.next_fire("30 2 * * *", "Europe/Berlin", utc("2026-03-29T01:00")) == utc("2026-03-30T00:30")
    assert cron.next_fire("30 * * * *", "Europe/Berlin", utc("2026-10-25T00:30")) == utc("2026-10-25T01:30")
    assert cron.next_fire("30 * * * *", "Europe/Berlin", utc("2026-10-25T01:30")) == utc("2026-10-25T02:30")


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware") as info:
        cron.next_fire("* * * * *", "UTC", datetime(2026, 1, 1))
    assert not isinstance(info.value, InvalidSchedule)
    with pytest.raises(ValueError):
        cron.upcoming("* * * * *", "UTC", datetime(2026, 1, 1), 3)
    with pytest.raises(ValueError):
        cron.fires_between("* * * * *", "UTC", utc("2026-01-01T00:00"), datetime(2026, 1, 2), 3)


def test_fires_between_bounds_and_limit() -> None:
    after, until = utc("2026-01-01T00:00"), utc("2026-01-01T01:00")
    fires = cron.fires_between("*/15 * * * *", "UTC", after, until, 100)
    assert fires == utcs("2026-01-01T00:15", "2026-01-01T00:30", "2026-01-01T00:45", "2026-01-01T01:00")
    assert cron.fires_between("*/15 * * * *", "UTC", after, until, 2) == fires[:2]
    assert cron.fires_between("*/15 * * * *", "UTC", after, until, 0) == []
    assert cron.fires_between("*/15 * * * *", "UTC", until, after, 10) == []
    assert cron.fires_between("0 0 1 1 *", "UTC", after, until, 10) == []


def test_upcoming_count() -> None:
    assert cron.upcoming("@daily", "UTC", utc("2026-01-01T00:00"), 0) == []
    assert len(cron.upcoming("@daily", "UTC", utc("2026-01-01T00:00"), 25)) == 25


def test_end_of_datetime_range() -> None:
    with pytest.raises(ValueError, match="no fire time"):
        cron.next_fire("0 0 1 1 *", "UTC", utc("9999-06-01T00:00"))
    assert cron.upcoming("0 0 1 * *", "UTC", utc("9999-10-15T00:00"), 5) == utcs("9999-11-01T00:00",
                                                                                  "9999-12-01T00:00")


def test_common_path_is_one_croniter_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cron._wall_after

    def counting(schedule: cron.CronSchedule, wall: datetime) -> datetime:
        calls.append(wall)
        return real(schedule, wall)

    monkeypatch.setattr(cron, "_wall_after", counting)
    for zone in ("UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney"):
        for expr in ("*/5 * * * *", "0 2 * * *", "30 * * * *", "15 9 * * mon-fri", "* * * * * *"):
            calls.clear()
            cron.next_fire(expr, zone, utc("2026-06-10T12:03"))
            assert len(calls) == 1, (zone, expr)


# Shortest interval between consecutive fires (the bound of a job's jitter).

@pytest.mark.parametrize(("expr", "expected"), [
    ("* * * * *", timedelta(minutes=1)),
    ("* * * * * *", timedelta(seconds=1)),
    ("*/15 * * * *", timedelta(minutes=15)),
    ("0,30 * * * *", timedelta(minutes=30)),
    ("5,10 0 * * *", timedelta(minutes=5)),
    ("0 8 * * *", timedelta(days=1)),
    ("0 23,1 * * *", timedelta(hours=2)),        # 23:00 to 01:00 across midnight
    ("59 23 * * *", timedelta(days=1)),
    ("0,59 0,23 * * *", timedelta(minutes=1)),   # 23:59 to 00:00
    ("30 0 0 * * *", timedelta(days=1)),
    ("0,30 0 0,12 * * *", timedelta(seconds=30)),
    ("0 9-17 * * 1-5", timedelta(hours=1)),
    ("0 0 * * 1,3,5", timedelta(days=2)),
    ("0 0 * * 0", timedelta(weeks=1)),
    ("@weekly", timedelta(weeks=1)),
    ("0 0 1 * *", timedelta(days=28)),           # February 1st to March 1st
    ("0 0 31 * *", timedelta(days=31)),          # July 31st to August 31st
    ("0 0 1 1 *", timedelta(days=365)),
    ("@yearly", timedelta(days=365)),
    ("0 0 29 2 *", timedelta(days=4 * 365 + 1)),  # leap day to leap day (the look-ahead crosses 2100)
    ("0 0 13 * 5", timedelta(days=1)),           # OR rule: Thursday 13th, then Friday 14th
    ("0 0 29 2 1", timedelta(days=1)),           # OR rule: Monday 28th, then the leap day
    ("0 0 */10 * *", timedelta(days=1)),         # the 31st, then the 1st
    ("0 0 1-7 * 1", timedelta(days=1)),          # OR rule: the 1st to the 7th, and Mondays
    ("0 0 */7 * 1", timedelta(days=7)),          # AND rule (dom starts with *): Mondays on the 1st, 8th ...
    ("0 0 * 2 *", timedelta(days=1)),
    ("0 12 * 1 *", timedelta(days=1)),
])
def test_shortest_interval(expr: str, expected: timedelta) -> None:
    assert cron.shortest_interval(expr) == expected


def test_shortest_interval_accepts_a_parsed_schedule_and_rejects_invalid_ones() -> None:
    assert cron.shortest_interval(cron.parse_schedule("*/5 * * * *")) == timedelta(minutes=5)
    with pytest.raises(InvalidSchedule):
        cron.shortest_interval("0 0 31 2 *")


@pytest.mark.parametrize("expr", [
    "*/7 * * * *", "0 */5 * * *", "13 2,3,17 * * *", "0 0 * * 1-5", "0 0 1,15 * *", "*/20 9-10 * * 6",
    "0 0 */3 * *", "0 12 1 */2 *", "0,1 0 30,31 * *", "5 4 * * 0,6", "0 0 13 * 5",
])
def test_shortest_interval_matches_enumerated_fires(expr: str) -> None:
    # UTC has no DST, so the enumerated instants are the wall clock; eight years
    # include two leap years and every weekday on every date (dense schedules stop
    # at the first 5,000 fires, which already hold their shortest gap).
    start = utc("2024-01-01T00:00") - timedelta(seconds=1)
    fires = cron.fires_between(expr, "UTC", start, utc("2032-01-01T00:00"), 5_000)
    assert cron.shortest_interval(expr) == min(b - a for a, b in itertools.pairwise(fires))
