"""Everything a client can get wrong gets its 4xx in the one error shape, never a
500, and changes nothing (SPEC §3, §7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, DOUBLED, assert_error, create

JSON = "application/json"
VALID = {"name": "n", "schedule": "* * * * *", "handler": "noop"}


def body_with(**changes: Any) -> str:
    body = {**VALID, **changes}
    return json.dumps({key: value for key, value in body.items() if value is not ...})


# (raw body, status, code, the field ``details`` must name or None)
CREATE_CASES: dict[str, tuple[str | bytes, int, str, str | None]] = {
    "malformed": ('{"name": "n",', 400, "malformed_json", None),
    "empty body": ("", 400, "malformed_json", None),
    "NaN literal": (body_with().replace('"n"', "NaN", 1), 400, "malformed_json", None),
    "huge float": ('{"name": "n", "schedule": "* * * * *", "handler": "noop", "args": {"x": 1e400}}', 400, "malformed_json", None),
    "lone surrogate": (body_with(name="\ud800"), 400, "malformed_json", None),
    "invalid utf-8": (b'{"name": "\xff", "schedule": "* * * * *", "handler": "noop"}', 400, "malformed_json", None),
    "10,000 nested arrays": ("[" * 10_000 + "]" * 10_000, 400, "malformed_json", None),
    "10,000 nested objects": ('{"a":' * 10_000 + "1" + "}" * 10_000, 400, "malformed_json", None),
    "array document": ("[]", 422, "validation_error", "_schema"),
    "string document": ('"job"', 422, "validation_error", "_schema"),
    "null document": ("null", 422, "validation_error", "_schema"),
    "unknown field": (body_with(owner="me"), 422, "validation_error", "owner"),
    "$-key at top level": (body_with(**{"$where": "1"}), 422, "validation_error", "$where"),
    "missing name": (body_with(name=...), 422, "validation_error", "name"),
    "missing schedule": (body_with(schedule=...), 422, "validation_error", "schedule"),
    "missing handler": (body_with(handler=...), 422, "validation_error", "handler"),
    "empty name": (body_with(name=""), 422, "validation_error", "name"),
    "name too long": (body_with(name="x" * 201), 422, "validation_error", "name"),
    "name as number": (body_with(name=42), 422, "validation_error", "name"),
    "name as null": (body_with(name=None), 422, "validation_error", "name"),
    "name as operator": (body_with(name={"$gt": ""}), 422, "validation_error", "name"),
    "schedule as operator": (body_with(schedule={"$ne": None}), 422, "validation_error", "schedule"),
    "handler as operator": (body_with(handler={"$in": ["noop"]}), 422, "validation_error", "handler"),
    "job_id as operator": (body_with(job_id={"$exists": True}), 422, "validation_error", "job_id"),
    "timezone as list": (body_with(timezone=["UTC"]), 422, "validation_error", "timezone"),
    "enabled yes": (body_with(enabled="yes"), 422, "validation_error", "enabled"),
    "enabled 1": (body_with(enabled=1), 422, "validation_error", "enabled"),
    "enabled 'true'": (body_with(enabled="true"), 422, "validation_error", "enabled"),
    "jitter as string": (body_with(jitter_s="5"), 422, "validation_error", "jitter_s"),
    "jitter as bool": (body_with(jitter_s=True), 422, "validation_error", "jitter_s"),
    "timeout as float": (body_with(timeout_s=1.5), 422, "validation_error", "timeout_s"),
    "timeout zero": (body_with(timeout_s=0), 422, "validation_error", "timeout_s"),
    "negative retries": (body_with(max_retries=-1), 422, "validation_error", "max_retries"),
    "jitter too big": (body_with(jitter_s=3601), 422, "validation_error", "jitter_s"),
    "unknown misfire policy": (body_with(misfire_policy="sometimes"), 422, "validation_error", "misfire_policy"),
    "unknown overlap policy": (body_with(overlap_policy="queue"), 422, "validation_error", "overlap_policy"),
    "invalid cron": (body_with(schedule="every day"), 422, "validation_error", "schedule"),
    "cron with 4 fields": (body_with(schedule="* * * *"), 422, "validation_error", "schedule"),
    "cron value out of range": (body_with(schedule="61 * * * *"), 422, "validation_error", "schedule"),
    "impossible date": (body_with(schedule="0 0 31 2 *"), 422, "validation_error", "schedule"),
    "30 February": (body_with(schedule="0 0 30 2 *"), 422, "validation_error", "schedule"),
    "@reboot": (body_with(schedule="@reboot"), 422, "validation_error", "schedule"),
    "unknown time zone": (body_with(timezone="Mars/Olympus_Mons"), 422, "validation_error", "timezone"),
    "path as time zone": (body_with(timezone="../../../etc/passwd"), 422, "validation_error", "timezone"),
    "empty time zone": (body_with(timezone=""), 422, "validation_error", "timezone"),
    "unknown handler": (body_with(handler="rm_rf"), 422, "validation_error", "handler"),
    "bad job_id": (body_with(job_id="Has Spaces"), 422, "validation_error", "job_id"),
    "job_id with trailing newline": (body_with(job_id="abc\n"), 422, "validation_error", "job_id"),
    "job_id too long": (body_with(job_id="a" * 65), 422, "validation_error", "job_id"),
    "job_id starting with _": (body_with(job_id="_x"), 422, "validation_error", "job_id"),
    "args not an object": (body_with(args=[1, 2]), 422, "validation_error", "args"),
    "args null": (body_with(args=None), 422, "validation_error", "args"),
    "args $-key": (body_with(args={"$set": {"enabled": False}}), 422, "validation_error", "args"),
    "args nested $-key": (body_with(args={"a": [{"b": {"$gt": 1}}]}), 422, "validation_error", "args"),
    "args dotted key": (body_with(args={"a.b": 1}), 422, "validation_error", "args"),
    "args empty key": (body_with(args={"": 1}), 422, "validation_error", "args"),
    "args NUL key": (body_with(args={"a\u0000": 1}), 422, "validation_error", "args"),
    "args too deep": (body_with(args=json.loads('{"a":' * 20 + "1" + "}" * 20)), 422, "validation_error", "args"),
    "body nested too deep": (body_with(args=json.loads('{"a":' * 40 + "1" + "}" * 40)), 400, "malformed_json", None),
    "980 nested arrays": ("[" * 980 + "]" * 980, 400, "malformed_json", None),
    "980 nested arrays in args": (body_with(args={"a": 0}).replace("0", "[" * 980 + "]" * 980), 400, "malformed_json", None),
    "args too large": (body_with(args={"blob": "x" * (16 * 1024)}), 422, "validation_error", "args"),
    "args number beyond 64 bits": (body_with(args={"n": 2**64}), 422, "validation_error", "args"),
    # input hygiene: control characters, blank names, jitter past the schedule's interval
    "name with NUL": (body_with(name="job\u0000x"), 422, "validation_error", "name"),
    "name with newline": (body_with(name="line\nbreak"), 422, "validation_error", "name"),
    "name with tab": (body_with(name="tab\there"), 422, "validation_error", "name"),
    "name with escape": (body_with(name="\u001b[31mred"), 422, "validation_error", "name"),
    "name with DEL": (body_with(name="x\u007f"), 422, "validation_error", "name"),
    "name with C1 control": (body_with(name="x\u0085"), 422, "validation_error", "name"),
    "name with line separator": (body_with(name="x\u2028y"), 422, "validation_error", "name"),
    "name with bidi override": (body_with(name="invoice\u202egpj.exe"), 422, "validation_error", "name"),
    "name only spaces": (body_with(name="   "), 422, "validation_error", "name"),
    "name only unicode spaces": (body_with(name="\u3000\u00a0"), 422, "validation_error", "name"),
    "handler with NUL": (body_with(handler="noop\u0000"), 422, "validation_error", "handler"),
    "schedule with NUL": (body_with(schedule="* * * * *\u0000"), 422, "validation_error", "schedule"),
    "schedule with newline": (body_with(schedule="* * * * *\n"), 422, "validation_error", "schedule"),
    "time zone with NUL": (body_with(timezone="UTC\u0000"), 422, "validation_error", "timezone"),
    "args key with newline": (body_with(args={"a\nb": 1}), 422, "validation_error", "args"),
    "args key with escape": (body_with(args={"\u001b": 1}), 422, "validation_error", "args"),
    "jitter equal to the interval": (body_with(schedule="* * * * *", jitter_s=60), 422, "validation_error", "jitter_s"),
    "jitter over the interval": (body_with(schedule="*/5 * * * * *", jitter_s=7), 422, "validation_error", "jitter_s"),
    "jitter over 23:00 to 00:00": (body_with(schedule="0 0,23 * * *", jitter_s=3600), 422, "validation_error",
                                   "jitter_s"),
    "5,000 nested arrays": ("[" * 5000 + "]" * 5000, 400, "malformed_json", None),
    "5,000 nested objects in args": (body_with(args={"a": 0}).replace("0", '{"a":' * 5000 + "1" + "}" * 5000),
                                     400, "malformed_json", None),
    "number with 5,000 digits": (body_with(args={"n": 0}).replace("0", "9" * 5000), 400, "malformed_json", None),
    "UTF-8 encoded surrogate": (b'{"name": "\xed\xa0\x80", "schedule": "* * * * *", "handler": "noop"}', 400,
                                "malformed_json", None),
}

#: Words from Python's internals that no error message may show.
INTERNALS = ("recursion", "traceback", "exception", "python", "codec", "decode", "sys.", "int_max_str_digits",
             "unicode string", "errno")


@pytest.mark.parametrize("raw,status,code,field", list(CREATE_CASES.values()), ids=list(CREATE_CASES))
def test_bad_create_bodies(client: FlaskClient, store: MongoStore, raw: str | bytes, status: int, code: str,
                           field: str | None) -> None:
    response = client.post(f"{CANONICAL}/jobs", data=raw, content_type=JSON)
    body = assert_error(response, status, code)
    if field is not None:
        assert field in body["error"]["details"], body
    assert not [word for word in INTERNALS if word in json.dumps(body).lower()], body
    assert store.jobs.count_documents({}) == 0


def test_a_5000_deep_body_says_how_deep_it_may_be(client: FlaskClient) -> None:
    for raw in ("[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000):
        body = assert_error(client.post(f"{CANONICAL}/jobs", data=raw, content_type=JSON), 400, "malformed_json")
        assert body["error"]["message"] == "The body nests deeper than 32 levels."


def test_malformed_json_names_the_position_not_the_parser(client: FlaskClient) -> None:
    body = assert_error(client.post(f"{CANONICAL}/jobs", data='{"name": "n",\n  }', content_type=JSON), 400)
    assert body["error"]["message"] == "The body is not valid JSON: Expecting property name enclosed in double quotes at line 2, column 3."
    body = assert_error(client.post(f"{CANONICAL}/jobs", data=b'{"name": "\xff"}', content_type=JSON), 400)
    assert body["error"]["message"] == "The body is not valid UTF-8 text (byte 10)."


def test_control_characters_are_named_by_code_point(client: FlaskClient) -> None:
    body = assert_error(client.post(f"{CANONICAL}/jobs", data=body_with(name="a\u0000b"), content_type=JSON), 422)
    assert body["error"]["details"]["name"] == ["Must not contain control characters (found U+0000)."]


def test_names_keep_ordinary_unicode_and_inner_spaces(client: FlaskClient) -> None:
    for name in ("Ünïcödé  Ñame", "日本語のジョブ", "emoji 🎉 ok", "  padded  ", "zero\u200dwidth joiner"):
        created = client.post(f"{CANONICAL}/jobs", data=body_with(name=name), content_type=JSON)
        assert created.status_code == 201, created.get_json()
        assert created.get_json()["name"] == name


@pytest.mark.parametrize(("schedule", "jitter_s"), [
    ("* * * * *", 59), ("0 * * * *", 3599), ("0 0 * * *", 3600), ("0 0 29 2 *", 3600), ("*/2 * * * * *", 1),
])
def test_jitter_below_the_shortest_interval_is_accepted(client: FlaskClient, schedule: str, jitter_s: int) -> None:
    created = client.post(f"{CANONICAL}/jobs", data=body_with(schedule=schedule, jitter_s=jitter_s), content_type=JSON)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["jitter_s"] == jitter_s


def test_jitter_message_names_the_interval(client: FlaskClient) -> None:
    body = assert_error(client.post(f"{CANONICAL}/jobs", data=body_with(schedule="*/10 * * * *", jitter_s=600),
                                    content_type=JSON), 422)
    assert body["error"]["details"]["jitter_s"] == [
        "jitter_s (600 s) must be below the schedule's shortest interval between fires (600 s)."]


def test_update_checks_jitter_against_the_stored_schedule_and_schedule_against_the_stored_jitter(
        client: FlaskClient, store: MongoStore) -> None:
    create(client, job_id="hourly", schedule="0 * * * *", jitter_s=1800)
    before = store.get_job("hourly")
    # a new jitter with the stored hourly schedule
    assert "jitter_s" in assert_error(client.put(f"{CANONICAL}/jobs/hourly", json={"jitter_s": 3600}), 422)[
        "error"]["details"]
    # a new schedule with the stored 1,800 s jitter
    assert "jitter_s" in assert_error(client.put(f"{CANONICAL}/jobs/hourly", json={"schedule": "*/15 * * * *"}),
                                      422)["error"]["details"]
    # both at once: judged together
    assert "jitter_s" in assert_error(client.put(f"{CANONICAL}/jobs/hourly",
                                                 json={"schedule": "*/15 * * * *", "jitter_s": 900}), 422)[
        "error"]["details"]
    assert store.get_job("hourly") == before
    changed = client.put(f"{CANONICAL}/jobs/hourly", json={"schedule": "*/15 * * * *", "jitter_s": 899})
    assert changed.status_code == 200, changed.get_json()
    assert client.put(f"{CANONICAL}/jobs/hourly", json={"schedule": "0 0 * * *"}).status_code == 200
    assert client.put(f"{CANONICAL}/jobs/hourly", json={"jitter_s": 3600}).status_code == 200


def test_update_of_an_unknown_job_with_a_jitter_is_404(client: FlaskClient) -> None:
    assert_error(client.put(f"{CANONICAL}/jobs/missing", json={"jitter_s": 5}), 404)


def test_every_invalid_field_is_named_at_once(client: FlaskClient) -> None:
    raw = json.dumps({"name": 1, "schedule": "0 0 31 2 *", "handler": "nope", "enabled": "yes", "colour": "red"})
    details = assert_error(client.post(f"{CANONICAL}/jobs", data=raw, content_type=JSON), 422)["error"]["details"]
    assert {"name", "schedule", "handler", "enabled", "colour"} <= set(details)
    assert all(isinstance(messages, list) and messages for messages in details.values())


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_json_content_type_is_415(client: FlaskClient, store: MongoStore, content_type: str | None) -> None:
    response = client.post(f"{CANONICAL}/jobs", data=json.dumps(VALID), content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert store.jobs.count_documents({}) == 0


def test_body_over_64_kib_is_413(client: FlaskClient, store: MongoStore) -> None:
    raw = body_with(name="x" * (64 * 1024))
    assert_error(client.post(f"{CANONICAL}/jobs", data=raw, content_type=JSON), 413, "payload_too_large")
    assert_error(client.post(f"{CANONICAL}/schedules/preview", data=raw, content_type=JSON), 413)
    assert store.jobs.count_documents({}) == 0


def test_json_with_charset_and_json_suffix_types_are_accepted(client: FlaskClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = client.post(f"{CANONICAL}/jobs", data=json.dumps(VALID), content_type=content_type)
        assert response.status_code == 201, response.get_json()


# -- PUT --------------------------------------------------------------------------------

UPDATE_CASES: dict[str, tuple[str, str | None, int, str, str | None]] = {
    "empty object": ("{}", JSON, 422, "validation_error", "_schema"),
    "empty body": ("", JSON, 400, "malformed_json", None),
    "no content type": ('{"enabled": false}', None, 415, "unsupported_media_type", None),
    "job_id change": ('{"job_id": "other"}', JSON, 422, "validation_error", "job_id"),
    "unknown field": ('{"enabled": false, "colour": "red"}', JSON, 422, "validation_error", "colour"),
    "enabled yes": ('{"enabled": "yes"}', JSON, 422, "validation_error", "enabled"),
    "enabled null": ('{"enabled": null}', JSON, 422, "validation_error", "enabled"),
    "schedule operator": ('{"schedule": {"$ne": null}}', JSON, 422, "validation_error", "schedule"),
    "impossible date": ('{"schedule": "0 0 31 2 *"}', JSON, 422, "validation_error", "schedule"),
    "unknown time zone": ('{"timezone": "Nowhere/City"}', JSON, 422, "validation_error", "timezone"),
    "unknown handler": ('{"handler": "nope"}', JSON, 422, "validation_error", "handler"),
    "args $-key": ('{"args": {"$inc": {"n": 1}}}', JSON, 422, "validation_error", "args"),
    "malformed": ('{"enabled": ', JSON, 400, "malformed_json", None),
    "name with NUL": ('{"name": "a\\u0000"}', JSON, 422, "validation_error", "name"),
    "blank name": ('{"name": " \\t "}', JSON, 422, "validation_error", "name"),
    "name with bidi isolate": ('{"name": "a\\u2066b"}', JSON, 422, "validation_error", "name"),
    "5,000 nested objects": ('{"a":' * 5000 + "1" + "}" * 5000, JSON, 400, "malformed_json", None),
    "deeply nested": ("[" * 10_000 + "]" * 10_000, JSON, 400, "malformed_json", None),
}


@pytest.mark.parametrize("raw,content_type,status,code,field", list(UPDATE_CASES.values()), ids=list(UPDATE_CASES))
def test_bad_update_bodies(client: FlaskClient, store: MongoStore, raw: str, content_type: str | None, status: int,
                           code: str, field: str | None) -> None:
    create(client, job_id="target")
    before = store.get_job("target")
    response = client.put(f"{CANONICAL}/jobs/target", data=raw, content_type=content_type)
    body = assert_error(response, status, code)
    if field is not None:
        assert field in body["error"]["details"], body
    assert store.get_job("target") == before


# -- preview -------------------------------------------------------------------------------

PREVIEW_CASES: dict[str, tuple[str, int, str | None]] = {
    "missing schedule": ('{"count": 3}', 422, "schedule"),
    "schedule operator": ('{"schedule": {"$gt": ""}}', 422, "schedule"),
    "count as string": ('{"schedule": "* * * * *", "count": "3"}', 422, "count"),
    "count too large": ('{"schedule": "* * * * *", "count": 1000}', 422, "count"),
    "after naive": ('{"schedule": "* * * * *", "after": "2026-01-01T00:00:00"}', 422, "after"),
    "after before 1970": ('{"schedule": "* * * * *", "after": "1900-01-01T00:00:00Z"}', 422, "after"),
    "after out of range": ('{"schedule": "* * * * *", "after": "0001-01-01T00:00:00+14:00"}', 422, "after"),
    "after at the end of time": ('{"schedule": "* * * * *", "after": "9999-12-31T23:59:59-14:00"}', 422, "after"),
    "after as number": ('{"schedule": "* * * * *", "after": 1774512000}', 422, "after"),
    "unknown field": ('{"schedule": "* * * * *", "tz": "UTC"}', 422, "tz"),
    "malformed": ('{"schedule": "* * * * *"', 400, None),
    "schedule with NUL": ('{"schedule": "* * * * *\\u0000"}', 422, "schedule"),
    "time zone with newline": ('{"schedule": "* * * * *", "timezone": "UTC\\n"}', 422, "timezone"),
}


@pytest.mark.parametrize("raw,status,field", list(PREVIEW_CASES.values()), ids=list(PREVIEW_CASES))
def test_bad_preview_bodies(client: FlaskClient, raw: str, status: int, field: str | None) -> None:
    body = assert_error(client.post(f"{CANONICAL}/schedules/preview", data=raw, content_type=JSON), status)
    if field is not None:
        assert field in body["error"]["details"], body


# -- query strings ----------------------------------------------------------------------------

QUERY_CASES: dict[str, tuple[str, str]] = {
    "page 0": ("page=0", "page"),
    "negative page": ("page=-1", "page"),
    "page not a number": ("page=first", "page"),
    "page float": ("page=1.5", "page"),
    "page huge": ("page=99999999999999999999999", "page"),
    "empty limit": ("limit=", "limit"),
    "limit 0": ("limit=0", "limit"),
    "limit 101": ("limit=101", "limit"),
    "limit not a number": ("limit=ten", "limit"),
    "unknown status": ("status=sleeping", "status"),
    "empty handler": ("handler=", "handler"),
    "handler with NUL": ("handler=noop%00", "handler"),
    "blank handler": ("handler=%20%20", "handler"),
    "handler operator": ("handler[$ne]=x", "handler[$ne]"),
    "status operator": ("status[$gt]=", "status[$gt]"),
    "unknown parameter": ("sort=-created_at", "sort"),
    "repeated parameter": ("status=active&status=disabled", "status"),
}


@pytest.mark.parametrize("query,field", list(QUERY_CASES.values()), ids=list(QUERY_CASES))
def test_bad_list_queries_are_400(client: FlaskClient, query: str, field: str) -> None:
    create(client)
    body = assert_error(client.get(f"{CANONICAL}/jobs?{query}"), 400, "invalid_query")
    assert field in body["error"]["details"], body


# -- routes and methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/jobs"), ("PATCH", "/jobs/x"), ("POST", "/jobs/x"), ("GET", "/jobs/x/trigger"),
    ("PUT", "/handlers"), ("GET", "/schedules/preview"), ("POST", "/scheduler"), ("DELETE", "/openapi.json"),
])
@pytest.mark.parametrize("prefix", [CANONICAL, DOUBLED])
def test_wrong_method_is_405_with_allow(client: FlaskClient, method: str, path: str, prefix: str) -> None:
    response = client.open(f"{prefix}{path}", method=method)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]


@pytest.mark.parametrize("path", [
    "/", "/api/v1/cron", "/api/v1/cron/", "/api/v1/cron/nothing", "/api/v1/cron/jobs/a/b/c",
    "/api/v2/cron/jobs", "/api/v1/cron/api/v1/cron/api/v1/cron/jobs", "/api/v1/cron/jobs/x/trigger/now",
])
def test_unknown_routes_are_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize("job_id", ["%00", "%ED%A0%80", "a" * 2000, "$where", "{\"$gt\":\"\"}", "..", "%2e%2e"])
def test_odd_ids_are_plain_404s(client: FlaskClient, job_id: str) -> None:
    assert_error(client.get(f"{CANONICAL}/jobs/{job_id}"), 404)
    assert_error(client.post(f"{CANONICAL}/jobs/{job_id}/trigger"), 404)
    assert_error(client.delete(f"{CANONICAL}/jobs/{job_id}"), 404)
