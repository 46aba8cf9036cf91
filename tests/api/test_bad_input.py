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
}


@pytest.mark.parametrize("raw,status,code,field", list(CREATE_CASES.values()), ids=list(CREATE_CASES))
def test_bad_create_bodies(client: FlaskClient, store: MongoStore, raw: str | bytes, status: int, code: str,
                           field: str | None) -> None:
    response = client.post(f"{CANONICAL}/jobs", data=raw, content_type=JSON)
    body = assert_error(response, status, code)
    if field is not None:
        assert field in body["error"]["details"], body
    assert store.jobs.count_documents({}) == 0


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
    "unknown status": ("status=paused", "status"),
    "empty handler": ("handler=", "handler"),
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
