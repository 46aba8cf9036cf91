"""The ``http`` handler's args and a job's ``notify`` through the API (issue 12, items 1,
2 and 4): listed, validated at create and update (422 with ``details`` naming each
field), the destination guard on literal hosts, and the run view's new fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, assert_error, create

API = CANONICAL
HOOK = "https://hooks.example.com/cronhive"


def http_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"url": "https://api.example.com/run", "method": "PUT", "headers": {"X-A": "1"},
                            "body": {"scope": ["daily", 1, None]}, "expect_status": [200, 202], "timeout_s": 5}
    args.update(overrides)
    return {key: value for key, value in args.items() if value is not ...}


@pytest.fixture
def local_client(settings: Settings, store: MongoStore) -> Iterator[FlaskClient]:
    """An API whose destination guard allows 127.0.0.1 only."""
    app: Flask = create_app(settings.replace(http_handler_allowed_hosts="127.0.0.1"))
    app.testing = True
    yield app.test_client()
    close_app(app)


def test_every_worker_has_the_http_handler_and_the_api_lists_it(client: FlaskClient) -> None:
    names = {item["name"]: item["description"] for item in client.get(f"{API}/handlers").get_json()["data"]}
    assert "http" in names and names["http"].startswith("Calls args.url")


def test_an_http_job_is_created_with_its_args_as_sent(client: FlaskClient) -> None:
    job = create(client, handler="http", args=http_args())
    assert job["handler"] == "http" and job["args"] == http_args() and job["notify"] is None
    minimal = create(client, job_id="minimal", handler="http", args={"url": "http://example.com/"})
    assert minimal["args"] == {"url": "http://example.com/"}


@pytest.mark.parametrize(("args", "field", "fragment"), [
    ({}, "url", "Give the URL"),
    ({"url": "ftp://example.com/x"}, "url", "Only http and https"),
    ({"url": "file:///etc/passwd"}, "url", "Only http and https"),
    ({"url": "https://user:pw@example.com/"}, "url", "credentials"),
    ({"url": "http:///nohost"}, "url", "no host"),
    ({"url": "https://example.com/", "method": "BREW"}, "method", "One of GET"),
    ({"url": "https://example.com/", "headers": {"X-A": 1}}, "headers", "must be a string"),
    ({"url": "https://example.com/", "headers": {"bad name": "x"}}, "headers", "Not a valid header name"),
    ({"url": "https://example.com/", "expect_status": 99}, "expect_status", "from 100 to 599"),
    ({"url": "https://example.com/", "expect_status": []}, "expect_status", "at least one"),
    ({"url": "https://example.com/", "expect_status": ["200"]}, "expect_status", "from 100 to 599"),
    ({"url": "https://example.com/", "timeout_s": 0}, "timeout_s", "above 0"),
    ({"url": "https://example.com/", "timeout_s": True}, "timeout_s", "above 0"),
    ({"url": "https://example.com/", "retries": 3}, "retries", "Unknown field"),
    ({"url": "http://169.254.169.254/latest/meta-data/"}, "url", "not allowed"),
    ({"url": "http://127.0.0.1:8080/"}, "url", "not allowed"),
    ({"url": "http://[::1]/"}, "url", "not allowed"),
    ({"url": "http://10.1.2.3/"}, "url", "not allowed"),
])
def test_bad_http_args_are_a_422_naming_the_field(client: FlaskClient, args: dict[str, Any], field: str,
                                                  fragment: str) -> None:
    body = assert_error(client.post(f"{API}/jobs", json={"name": "x", "schedule": "@daily", "handler": "http",
                                                         "args": args}), 422, "validation_error")
    problems = body["error"]["details"]["args"]
    assert fragment in " ".join(problems[field]), problems


def test_the_guard_at_create_follows_http_handler_allowed_hosts(local_client: FlaskClient) -> None:
    ok = local_client.post(f"{API}/jobs", json={"name": "local", "schedule": "@daily", "handler": "http",
                                                "args": {"url": "http://127.0.0.1:9/"}})
    assert ok.status_code == 201, ok.get_data(as_text=True)
    refused = local_client.post(f"{API}/jobs", json={"name": "other", "schedule": "@daily", "handler": "http",
                                                     "args": {"url": "http://127.0.0.2:9/"}})
    details = assert_error(refused, 422)["error"]["details"]
    assert details == {"args": {"url": ["Calls to 127.0.0.2 are not allowed (HTTP_HANDLER_ALLOWED_HOSTS)."]}}
    # a name is checked when called (after DNS resolution), not at create
    named = local_client.post(f"{API}/jobs", json={"name": "named", "schedule": "@daily", "handler": "http",
                                                   "args": {"url": "http://localhost:9/"}})
    assert named.status_code == 201


def test_an_update_checks_http_args_against_the_stored_handler_and_args(client: FlaskClient) -> None:
    create(client, job_id="caller", handler="http", args=http_args())
    details = assert_error(client.put(f"{API}/jobs/caller", json={"args": {"url": "gopher://x"}}), 422)
    assert "args" in details["error"]["details"] and "url" in details["error"]["details"]["args"]
    ok = client.put(f"{API}/jobs/caller", json={"args": {"url": "https://example.org/"}})
    assert ok.status_code == 200 and ok.get_json()["args"] == {"url": "https://example.org/"}

    create(client, job_id="plain", handler="noop", args={"anything": 1})
    switched = assert_error(client.put(f"{API}/jobs/plain", json={"handler": "http"}), 422)
    assert "url" in switched["error"]["details"]["args"]  # the stored args are not http args
    both = client.put(f"{API}/jobs/plain", json={"handler": "http", "args": {"url": "https://example.org/"}})
    assert both.status_code == 200
    back = client.put(f"{API}/jobs/plain", json={"handler": "noop"})
    assert back.status_code == 200 and back.get_json()["handler"] == "noop"


# -- notify -----------------------------------------------------------------------


def test_notify_is_stored_shown_changed_and_removed(client: FlaskClient) -> None:
    notify = {"url": HOOK, "on": ["failure", "recovery"], "headers": {"Authorization": "Bearer ${secret:HOOK}"}}
    job = create(client, job_id="watched", notify=notify)
    assert job["notify"] == notify
    assert client.get(f"{API}/jobs/watched").get_json()["notify"] == notify
    page = client.get("/ui/jobs/watched").get_data(as_text=True)
    assert 'id="job-notify"' in page and HOOK in page and "recovery" in page
    changed = client.put(f"{API}/jobs/watched", json={"notify": {"url": HOOK, "on": ["skipped"]}})
    assert changed.status_code == 200
    assert changed.get_json()["notify"] == {"url": HOOK, "on": ["skipped"], "headers": {}}
    removed = client.put(f"{API}/jobs/watched", json={"notify": None})
    assert removed.status_code == 200 and removed.get_json()["notify"] is None
    assert client.get(f"{API}/jobs/watched").get_json()["notify"] is None


@pytest.mark.parametrize(("notify", "field", "fragment"), [
    ({"on": ["failure"]}, "url", "Missing data"),
    ({"url": HOOK}, "on", "Missing data"),
    ({"url": HOOK, "on": []}, "on", "Length must be"),
    ({"url": HOOK, "on": ["failed"]}, "on", "Must be one of"),
    ({"url": HOOK, "on": ["failure", "failure"]}, "on", "once"),
    ({"url": HOOK, "on": "failure"}, "on", "Not a valid list"),
    ({"url": "ftp://hooks.example.com/", "on": ["failure"]}, "url", "Only http and https"),
    ({"url": "https://u:p@hooks.example.com/", "on": ["failure"]}, "url", "credentials"),
    ({"url": HOOK, "on": ["failure"], "headers": {"X": 1}}, "headers", "Not a valid string"),
    ({"url": HOOK, "on": ["failure"], "headers": {"bad name": "x"}}, "headers", "header name"),
    ({"url": HOOK, "on": ["failure"], "secret": "x"}, "secret", "Unknown field"),
    ({"url": "http://192.168.1.10/hook", "on": ["failure"]}, "url", "not allowed"),
    ({"url": "http://[fd00::1]/hook", "on": ["failure"]}, "url", "not allowed"),
])
def test_bad_notify_is_a_422_naming_the_field(client: FlaskClient, notify: dict[str, Any], field: str,
                                              fragment: str) -> None:
    for response in (client.post(f"{API}/jobs", json={"name": "n", "schedule": "@daily", "handler": "noop",
                                                      "notify": notify}),):
        details = assert_error(response, 422, "validation_error")["error"]["details"]
        problems = details["notify"][field]
        text = " ".join(problems) if isinstance(problems, list) else str(problems)
        assert fragment in text, details
    create(client, job_id="target")
    details = assert_error(client.put(f"{API}/jobs/target", json={"notify": notify}), 422)["error"]["details"]
    assert field in details["notify"]


def test_notify_must_be_an_object(client: FlaskClient) -> None:
    details = assert_error(client.post(f"{API}/jobs", json={"name": "n", "schedule": "@daily", "handler": "noop",
                                                            "notify": "https://x"}), 422)["error"]["details"]
    assert "notify" in details


def test_notify_to_an_allowed_literal_host(local_client: FlaskClient) -> None:
    ok = local_client.post(f"{API}/jobs", json={"name": "n", "schedule": "@daily", "handler": "noop",
                                                "notify": {"url": "http://127.0.0.1:9/hook", "on": ["failure"]}})
    assert ok.status_code == 201, ok.get_data(as_text=True)


def test_a_run_shows_output_log_and_notifications(client: FlaskClient, store: MongoStore) -> None:
    create(client, job_id="shown")
    run_id = client.post(f"{API}/jobs/shown/trigger").get_json()["run_id"]
    store.runs.update_one({"_id": run_id}, {"$set": {
        "status": "failed", "output_json": '{"status":500,"body":"<b>no</b>"}', "output_truncated": False,
        "log": "2026-12-01T00:00:00.000Z INFO <script>x</script>",
        "notifications": [{"event": "failure", "url": HOOK, "headers": {"Authorization": "secret"},
                           "status": "delivered", "attempts": 2, "response_status": 204, "error": None}]}})
    run = client.get(f"{API}/runs/{run_id}").get_json()
    assert run["output"] == {"status": 500, "body": "<b>no</b>"} and run["output_truncated"] is False
    assert run["log"].endswith("<script>x</script>")
    assert run["notifications"] == [{"event": "failure", "url": HOOK, "status": "delivered", "attempts": 2,
                                     "last_attempt_at": None, "delivered_at": None, "response_status": 204,
                                     "error": None}]  # headers (credentials) are not shown
    (listed,) = client.get(f"{API}/jobs/shown/runs").get_json()["data"]
    assert listed["output"] == run["output"] and "log" not in listed  # lists stay light
    page = client.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x</script>" not in page
    assert "&lt;b&gt;no&lt;/b&gt;" in page and 'id="notifications"' in page
