"""The OpenAPI document states the server's rules: instants as ``date-time``, the
limits it enforces (and only those: a value the document's pattern accepts the
server accepts), every status each operation can answer, the bearer scheme, and
``handler`` as a plain string."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from tests.api.conftest import CANONICAL, job_body

JOBS, JOB = f"{CANONICAL}/jobs", f"{CANONICAL}/jobs/{{job_id}}"
OPERATIONS = {
    ("get", JOBS), ("post", JOBS), ("get", JOB), ("put", JOB), ("delete", JOB), ("post", f"{JOB}/trigger"),
    ("get", f"{JOB}/runs"), ("get", f"{CANONICAL}/runs/{{run_id}}"), ("get", f"{CANONICAL}/handlers"),
    ("get", f"{CANONICAL}/scheduler"), ("get", f"{CANONICAL}/workers"), ("post", f"{CANONICAL}/schedules/preview"),
    ("get", f"{JOB}/revisions"),
    ("post", f"{JOB}/backfill"), ("get", f"{CANONICAL}/runs"), ("post", f"{CANONICAL}/runs/{{run_id}}/cancel"),
}
MAINTENANCE, WINDOW = f"{CANONICAL}/maintenance", f"{CANONICAL}/maintenance/{{maintenance_id}}"
OPERATIONS |= {("get", f"{JOB}/slots"), ("get", MAINTENANCE), ("post", MAINTENANCE), ("get", WINDOW),
               ("delete", WINDOW)}
WITH_BODY = {("post", JOBS), ("put", JOB), ("post", f"{CANONICAL}/schedules/preview"), ("post", f"{JOB}/backfill")}
WITH_BODY |= {("post", MAINTENANCE)}
MUTATING = {("post", JOBS), ("put", JOB), ("delete", JOB), ("post", f"{JOB}/trigger"), ("post", f"{JOB}/backfill"),
            ("post", f"{CANONICAL}/runs/{{run_id}}/cancel")}
MUTATING |= {("post", MAINTENANCE), ("delete", WINDOW)}
#: Operations taking If-Match (412 when it does not match).
CONDITIONAL = {("put", JOB), ("delete", JOB)}


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    return client.get(f"{CANONICAL}/openapi.json").get_json()


@pytest.fixture
def secured_document(settings: Settings) -> Any:
    app: Flask = create_app(settings.replace(api_token="s3cret"))
    try:
        return app.test_client().get(f"{CANONICAL}/openapi.json").get_json()
    finally:
        close_app(app)


def matches(pattern: str, value: str) -> bool:
    """A JSON Schema pattern (ECMA-262: ``$`` is the end of the input; in Python it
    also matches before a final newline) applied to `value`."""
    return re.search(pattern.replace("$", r"\Z"), value) is not None


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = document["components"]["schemas"][name]["properties"]
    return properties


def test_every_instant_is_a_date_time(document: dict[str, Any]) -> None:
    instants = {
        "Job": ["last_triggered_at", "next_trigger_at", "created_at", "updated_at", "paused_until", "start_at", "end_at"],
        "JobCreate": ["start_at", "end_at"],
        "JobUpdate": ["start_at", "end_at"],
        "Backfill": ["start", "end"],
        "Trigger": ["triggered_at"],
        "Run": ["scheduled_for", "created_at", "queued_at", "started_at", "finished_at", "retry_at"],
        "RunSummary": ["scheduled_for", "created_at", "queued_at", "started_at", "finished_at", "retry_at"],
        "Scheduler": ["lease_expires_at"],
        "Preview": ["after"],
        "Attempt": ["started_at", "finished_at"],
        "Worker": ["started_at", "seen_at", "expires_at"],
        "Maintenance": ["start", "end", "planned_end", "created_at"],
        "MaintenanceCreate": ["start", "end"],
        "Slot": ["scheduled_for"],
        "Revision": ["at"],
        "Notification": ["last_attempt_at", "delivered_at"],
    }
    for name, fields in instants.items():
        for field in fields:
            assert schema(document, name)[field]["type"] == "string", (name, field)
            assert schema(document, name)[field]["format"] == "date-time", (name, field)
    assert schema(document, "PreviewResult")["fires"]["items"]["format"] == "date-time"
    # ... and nothing else is one
    for name, properties in document["components"]["schemas"].items():
        for field, prop in properties.get("properties", {}).items():
            if prop.get("format") == "date-time":
                assert field in [*instants.get(name, []), "fires"], (name, field)


def test_the_enforced_limits_are_declared(document: dict[str, Any]) -> None:
    for name in ("JobCreate", "JobUpdate"):
        props = schema(document, name)
        assert (props["name"]["minLength"], props["name"]["maxLength"]) == (1, 200)
        assert (props["handler"]["minLength"], props["handler"]["maxLength"]) == (1, 200)
        assert props["name"]["pattern"] == props["handler"]["pattern"]
        assert (props["schedule"]["minLength"], props["schedule"]["maxLength"]) == (1, 256)
        assert (props["timezone"]["minLength"], props["timezone"]["maxLength"]) == (1, 64)
        assert "pattern" in props["schedule"] and "pattern" in props["timezone"]
        assert (props["args"]["x-max-bytes"], props["args"]["x-max-depth"]) == (16 * 1024, 16)
        assert "16384 bytes" in props["args"]["description"]
        for field, low, high in [("misfire_grace_s", 0, 604800), ("jitter_s", 0, 3600), ("timeout_s", 1, 604800),
                                 ("max_retries", 0, 20)]:
            assert (props[field]["type"], props[field]["minimum"], props[field]["maximum"]) == ("integer", low, high)
        assert set(props["misfire_policy"]["enum"]) == {"fire_once", "skip", "fire_all"}
        assert set(props["overlap_policy"]["enum"]) == {"forbid", "allow", "buffer_one"}
    assert schema(document, "JobCreate")["job_id"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,63}$"
    assert schema(document, "JobCreate")["job_id"]["maxLength"] == 64
    preview = schema(document, "Preview")
    assert (preview["count"]["minimum"], preview["count"]["maximum"]) == (1, 100)
    job_id = next(p for p in document["paths"][JOB]["parameters"] if p["name"] == "job_id")["schema"]
    assert (job_id["pattern"], job_id["maxLength"]) == ("^[a-z0-9][a-z0-9_-]{0,63}$", 64)
    query = {p["name"]: p["schema"] for p in document["paths"][JOBS]["get"]["parameters"]}
    assert (query["page"]["minimum"], query["page"]["maximum"]) == (1, 1_000_000)
    assert (query["limit"]["minimum"], query["limit"]["maximum"]) == (1, 100)
    assert query["handler"]["pattern"] == schema(document, "JobCreate")["handler"]["pattern"]


def test_handler_is_a_plain_string_pointing_at_get_handlers(document: dict[str, Any]) -> None:
    for name in ("JobCreate", "JobUpdate", "Job"):
        handler = schema(document, name)["handler"]
        assert handler["type"] == "string" and "enum" not in handler, (name, handler)
        assert "/handlers" in handler["description"]


@pytest.mark.parametrize("name", [
    "Daily Reminder Check", "  padded  ", "日本語", "🎉", "a\u200db", "x" * 200,
    "", " ", "\t", "\u3000", "a\u0000", "a\nb", "a\tb", "\u001b[0m", "a\u0085", "a\u2028", "a\u202eb", "a\u2069",
])
def test_the_name_pattern_says_what_the_server_accepts(client: FlaskClient, document: dict[str, Any], name: str) -> None:
    pattern = schema(document, "JobCreate")["name"]["pattern"]
    declared = matches(pattern, name)
    status = client.post(f"{CANONICAL}/jobs", json=job_body(name=name)).status_code
    assert status == (201 if declared else 422), (name, status)


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5",
                                      "Europe Berlin", "../etc/passwd", "UTC\n", "Europe/Berlin\u0000", "/UTC"])
def test_the_time_zone_pattern_holds_every_accepted_zone(client: FlaskClient, document: dict[str, Any],
                                                         timezone: str) -> None:
    declared = matches(schema(document, "JobCreate")["timezone"]["pattern"], timezone)
    status = client.post(f"{CANONICAL}/jobs", json=job_body(timezone=timezone)).status_code
    assert status == (201 if declared else 422), (timezone, status)  # every zone shaped like one here exists


def test_every_status_each_operation_answers_is_declared(document: dict[str, Any],
                                                         secured_document: dict[str, Any]) -> None:
    declared = {(method, path) for path, item in document["paths"].items() for method in item if method != "parameters"}
    assert declared == OPERATIONS
    for doc, secured in ((document, False), (secured_document, True)):
        for method, path in OPERATIONS:
            statuses = {int(code) for code in doc["paths"][path][method]["responses"]}
            assert {405, 414} <= statuses, (method, path)
            if (method, path) in WITH_BODY:
                assert {400, 413, 415, 422} <= statuses, (method, path)
            assert (401 in statuses) == (secured and (method, path) in MUTATING), (method, path, secured)
            assert (403 in statuses) == (secured and (method, path) in MUTATING), (method, path, secured)
            assert (412 in statuses) == ((method, path) in CONDITIONAL), (method, path)
            if path != f"{CANONICAL}/handlers":
                assert 503 in statuses, (method, path)
    assert {404, 409} <= {int(code) for code in document["paths"][f"{JOB}/trigger"]["post"]["responses"]}
    responses = document["paths"][JOB]["put"]["responses"]
    assert "Allow" in responses["405"]["headers"] and "Retry-After" in responses["503"]["headers"]


def test_the_bearer_scheme_guards_the_mutations_when_a_token_is_set(document: dict[str, Any],
                                                                    secured_document: dict[str, Any]) -> None:
    assert "securitySchemes" not in document.get("components", {})
    schemes = secured_document["components"]["securitySchemes"]
    assert list(schemes) == ["bearer"] and (schemes["bearer"]["type"], schemes["bearer"]["scheme"]) == ("http", "bearer")
    for method, path in OPERATIONS:
        operation = secured_document["paths"][path][method]
        assert operation.get("security") == ([{"bearer": []}] if (method, path) in MUTATING else None), (method, path)
        if (method, path) in MUTATING:
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


def test_tags_and_the_maintenance_and_ledger_rules_are_declared(document: dict[str, Any]) -> None:
    for name in ("JobCreate", "JobUpdate"):
        tags = schema(document, name)["tags"]
        assert (tags["type"], tags["maxItems"], tags["uniqueItems"]) == ("array", 20, True)
        assert tags["items"]["pattern"] == "^[a-z0-9][a-z0-9_.-]{0,63}$" and tags["items"]["maxLength"] == 64
    assert schema(document, "Job")["paused_until"]["nullable"] is True
    assert set(schema(document, "Job")["status"]["enum"]) == {"active", "disabled", "paused", "invalid", "completed"}
    query = {p["name"]: p["schema"] for p in document["paths"][JOBS]["get"]["parameters"]}
    assert query["tag"]["pattern"] == "^[a-z0-9][a-z0-9_.-]{0,63}$"
    assert set(query["status"]["enum"]) == {"active", "disabled", "paused", "completed"}
    create = document["components"]["schemas"]["MaintenanceCreate"]
    assert create["required"] == ["end"] and schema(document, "MaintenanceCreate")["tags"]["maxItems"] == 20
    assert set(schema(document, "Maintenance")["status"]["enum"]) == {"upcoming", "active", "ended"}
    assert "201" in document["paths"][MAINTENANCE]["post"]["responses"]
    slots = document["paths"][f"{JOB}/slots"]["get"]
    assert {p["name"] for p in slots["parameters"]} == {"from", "to"}
    assert {"200", "404", "422"} <= set(slots["responses"])
    assert "coalesced" in schema(document, "Slot")["outcome"]["enum"]
    assert "missed" in schema(document, "Slot")["outcome"]["enum"]
