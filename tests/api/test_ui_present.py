"""How the dashboard words and lays out values (`cronhive.api.ui.present`, `.forms`): pure."""

from __future__ import annotations

from datetime import UTC, datetime

from werkzeug.datastructures import MultiDict

from cronhive import cron
from cronhive.api.ui import forms, present


def test_schedules_in_plain_words_read_six_fields_seconds_first() -> None:
    assert present.describe("0 8 * * *") == "At 08:00"
    assert present.describe("30 0 8 * * *") == "At 08:00:30"  # seconds first, as cronhive.cron reads it
    assert present.describe("*/15 * * * * *") == "Every 15 seconds"
    assert present.describe("0 */6 * * * *") == "Every 6 minutes"
    assert present.describe("0 9 * * mon-fri") == "At 09:00, Monday through Friday"
    assert present.describe("0 8 * * 7") == present.describe("0 8 * * 0") == "At 08:00, only on Sunday"
    assert present.describe("@daily") == "At 00:00 (@daily)"
    assert present.describe("0 8 1 * mon").endswith("(on either: the day of month or the weekday)")
    assert present.describe("0 0 31 2 *") == "not a valid schedule"


def test_next_fires_mark_the_dst_transitions_between_them() -> None:
    after = datetime(2026, 3, 28, 0, 0, tzinfo=UTC)
    fires = cron.upcoming("30 2 * * *", "Europe/Berlin", after, 3)
    rows = present.fire_rows(fires, "Europe/Berlin", after)
    assert [row.local_text for row in rows] == ["Sat 2026-03-28 02:30:00", "Sun 2026-03-29 03:00:00",
                                                "Mon 2026-03-30 02:30:00"]
    assert [row.transition for row in rows] == [None, "CET → CEST (UTC+01:00 → UTC+02:00)", None]
    assert rows[1].utc_text == "Sun 2026-03-29 01:00:00 UTC" and rows[1].offset == "UTC+02:00"


def test_durations_and_relative_times() -> None:
    assert [present.duration(v) for v in (None, 12, 1250, 12_345, 125_000, 3_900_000)] == [
        "–", "12 ms", "1.25 s", "12.3 s", "2 min 05 s", "1 h 05 min"]
    now = datetime(2026, 3, 26, 10, tzinfo=UTC)
    assert present.relative("2026-03-26T10:04:00Z", now) == "in 4 min"
    assert present.relative("2026-03-26T07:00:00Z", now) == "3 h ago"
    assert present.utc_text("2026-03-26T08:00:00Z") == "2026-03-26 08:00:00 UTC"


def test_the_slot_strip_tells_missed_from_skipped() -> None:
    assert present.slot_outcome({"status": "skipped", "error": {"type": "misfire"}}) == ("missed", "missed")
    assert present.slot_outcome({"status": "skipped", "error": {"type": "overlap"}}) == ("skip", "skipped")
    assert present.slot_outcome({"status": "succeeded"}) == ("ok", "ran")
    assert present.slot_outcome({"status": "timed_out"}) == ("bad", "timed out")


def test_the_form_becomes_the_apis_json_body() -> None:
    form = MultiDict({"name": " Export ", "job_id": "", "schedule": "0 3 * * *", "timezone": "", "handler": "noop",
                      "misfire_grace_s": "90", "max_retries": "two", "enabled_shown": "1", "args": '{"a": [1, 2]}'})
    payload, problems = forms.payload_from_form(form, creating=True)
    assert payload == {"name": "Export", "schedule": "0 3 * * *", "handler": "noop", "misfire_grace_s": 90,
                       "max_retries": "two", "enabled": False, "args": {"a": [1, 2]}}
    assert problems == {}
    _, problems = forms.payload_from_form(MultiDict({"args": "{nope"}), creating=True)
    assert problems["args"][0].startswith("Not valid JSON")
    edit, _ = forms.payload_from_form(MultiDict({"name": "", "args": "", "enabled_shown": "1", "enabled": "on"}),
                                      creating=False)
    assert edit == {"name": "", "enabled": True, "args": {}}  # an emptied name is sent (and refused by the API)
    assert forms.flatten_errors({"args": {"x": ["bad"]}, "name": ["Missing."]}) == {"args": ["x: bad"],
                                                                                    "name": ["Missing."]}
