"""Named tokens and roles: walk the app's URL map, so that every write endpoint —
any method but GET/HEAD/OPTIONS, of the REST API and of the dashboard — refuses a
read token and no token (a new endpoint cannot forget it); the token's name is
the actor of its changes; ``API_READS=token`` closes the reads but not the
health checks; secrets never reach a log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from cronhive.api.app import close_app, create_app
from cronhive.enums import ReadAccess, TokenRole
from cronhive.settings import ApiToken, Settings
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, assert_error, job_body

ADMIN_SECRET = "admin-secret-0001"
CI_SECRET = "ci-secret-0002"
VIEWER_SECRET = "viewer-secret-0003"
SECRETS = (ADMIN_SECRET, CI_SECRET, VIEWER_SECRET)
TOKENS = (ApiToken("ci", CI_SECRET), ApiToken("viewer", VIEWER_SECRET, TokenRole.READ))
SAFE = {"GET", "HEAD", "OPTIONS"}
#: Writes by method that store nothing, reviewed one by one: a read token may call them.
READS_BY_POST = {"cron.preview", "cron_alias.preview"}
#: The dashboard's own sign-in and sign-out (CSRF-checked, they change only the session).
SESSION_ENDPOINTS = {"ui.signin", "ui.signout"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make(settings: Settings, **changes: object) -> Flask:
    app = create_app(settings.replace(api_token=ADMIN_SECRET, api_tokens=TOKENS, **changes))
    app.testing = True
    return app


@pytest.fixture
def roles_app(settings: Settings, store: MongoStore) -> Iterator[Flask]:
    app = make(settings)
    yield app
    close_app(app)


@pytest.fixture
def closed_app(settings: Settings, store: MongoStore) -> Iterator[Flask]:
    app = make(settings, api_reads=ReadAccess.TOKEN)
    yield app
    close_app(app)


def url_of(rule: Rule) -> str:
    """A concrete URL of ``rule``: each argument an id that exists."""
    values = {"job_id": "existing", "run_id": "run_existing", "anything": "x", "filename": "app.js"}
    url = rule.rule
    for name in rule.arguments:
        url = re.sub(rf"<(?:[^:<>]+:)?{name}>", values.get(name, "x"), url)
    return url


def write_rules(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) of every write the app serves."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - SAFE):
            found.append((rule.endpoint, method, url_of(rule)))
    return found


def state(store: MongoStore) -> tuple[int, int, int, object]:
    job = store.jobs.find_one({"_id": "existing"})
    return (store.jobs.count_documents({}), store.runs.count_documents({}), store.revisions.count_documents({}),
            job and job["revision"])


def test_every_write_endpoint_refuses_a_read_token_and_no_token(roles_app: Flask, store: MongoStore) -> None:
    client = roles_app.test_client()
    assert client.post(f"{CANONICAL}/jobs", json=job_body(job_id="existing"), headers=bearer(CI_SECRET)).status_code == 201
    before = state(store)
    writes = write_rules(roles_app)
    api_writes = [(endpoint, method, url) for endpoint, method, url in writes if not endpoint.startswith("ui.")]
    ui_writes = [(endpoint, method, url) for endpoint, method, url in writes if endpoint.startswith("ui.")]
    # what the walk found: the known writes at least (so this test cannot pass by walking nothing)
    assert {("cron.create_job", "POST"), ("cron.update_job", "PUT"), ("cron.delete_job", "DELETE"),
            ("cron.trigger", "POST"), ("cron_alias.trigger", "POST")} <= {(e, m) for e, m, _ in api_writes}
    assert {"ui.trigger", "ui.pause", "ui.resume", "ui.delete", "ui.create_job", "ui.update_job"} <= {
        e for e, _, _ in ui_writes}
    marked = {endpoint for endpoint, _, _ in api_writes
              if getattr(roles_app.view_functions[endpoint], "reads_only", False)}
    assert marked == READS_BY_POST  # opting out of the guard is reviewed here, one endpoint at a time

    for endpoint, method, url in api_writes:
        if endpoint in READS_BY_POST:
            continue
        body = {"name": "x"} if method in {"POST", "PUT", "PATCH"} else None
        for headers in ({}, bearer("wrong"), {"Authorization": VIEWER_SECRET}):
            response = client.open(url, method=method, json=body, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer", (endpoint, method)
        refused = assert_error(client.open(url, method=method, json=body, headers=bearer(VIEWER_SECRET)), 403,
                               "forbidden")
        assert refused["error"]["details"] == {"token": "viewer", "role": "read"}, endpoint
    assert state(store) == before

    for endpoint, method, url in ui_writes:
        if endpoint in SESSION_ENDPOINTS:
            continue
        anonymous = roles_app.test_client()
        csrf = csrf_of(anonymous)
        assert anonymous.open(url, method=method, data={"csrf_token": csrf}).status_code == 401, endpoint
        reader = signed_in_client(roles_app, VIEWER_SECRET)
        refused_page = reader.open(url, method=method, data={"csrf_token": csrf_of(reader)})
        assert refused_page.status_code == 403, endpoint
        assert "may only read" in refused_page.get_data(as_text=True)
    assert state(store) == before


def csrf_of(client: FlaskClient, path: str = "/ui/signin") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert found
    return found.group(1)


def signed_in_client(app: Flask, secret: str) -> FlaskClient:
    client = app.test_client()
    response = client.post("/ui/signin", data={"csrf_token": csrf_of(client), "token": secret, "next": "/ui/"})
    assert response.status_code == 303
    return client


def test_a_read_token_reads_and_previews(roles_app: Flask, store: MongoStore) -> None:
    client = roles_app.test_client()
    client.post(f"{CANONICAL}/jobs", json=job_body(job_id="existing"), headers=bearer(ADMIN_SECRET))
    for path in ("/jobs", "/jobs/existing", "/jobs/existing/revisions", "/jobs/existing/runs", "/handlers"):
        assert client.get(f"{CANONICAL}{path}", headers=bearer(VIEWER_SECRET)).status_code == 200, path
    preview = client.post(f"{CANONICAL}/schedules/preview", json={"schedule": "@daily", "count": 1},
                          headers=bearer(VIEWER_SECRET))
    assert preview.status_code == 200


def test_the_tokens_name_is_the_actor_of_its_changes(roles_app: Flask, store: MongoStore) -> None:
    client = roles_app.test_client()
    assert client.post(f"{CANONICAL}/jobs", json=job_body(job_id="acted"), headers=bearer(CI_SECRET)).status_code == 201
    assert client.put(f"{CANONICAL}/jobs/acted", json={"enabled": False}, headers=bearer(ADMIN_SECRET)).status_code == 200
    admin = signed_in_client(roles_app, CI_SECRET)
    assert admin.post("/ui/jobs/acted/resume", data={"csrf_token": csrf_of(admin, "/ui/jobs/acted")}).status_code == 303
    revisions = client.get(f"{CANONICAL}/jobs/acted/revisions").get_json()["data"]
    assert [(r["action"], r["actor"]) for r in revisions] == [("resume", "ci"), ("pause", "admin"), ("create", "ci")]
    page = admin.get("/ui/").get_data(as_text=True)
    assert 'id="signed-in-as">ci<' in page
    reader_page = signed_in_client(roles_app, VIEWER_SECRET).get("/ui/jobs/acted").get_data(as_text=True)
    assert "(read-only)" in reader_page and "You are reading" in reader_page


def test_api_reads_token_closes_every_read_but_the_health_checks(closed_app: Flask, store: MongoStore) -> None:
    client = closed_app.test_client()
    client.post(f"{CANONICAL}/jobs", json=job_body(job_id="existing"), headers=bearer(ADMIN_SECRET))
    reads = [(rule.endpoint, url_of(rule)) for rule in closed_app.url_map.iter_rules()
             if "GET" in (rule.methods or set()) and rule.endpoint.split(".")[0] in {"cron", "cron_alias"}]
    assert len(reads) >= 18  # 9 reads, under both path forms
    for endpoint, url in reads:
        if endpoint.endswith(".openapi"):
            assert client.get(url).status_code == 200
            continue
        assert_error(client.get(url), 401, "unauthorized")
        assert client.get(url, headers=bearer(VIEWER_SECRET)).status_code in {200, 404}, endpoint
    preview = client.post(f"{CANONICAL}/schedules/preview", json={"schedule": "@daily"})
    assert_error(preview, 401, "unauthorized")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    page = client.get("/ui/")
    assert page.status_code == 303 and page.headers["Location"].startswith("/ui/signin")
    assert client.get("/ui/jobs/existing/live").status_code == 303
    assert client.get("/ui/static/app.js").status_code == 200
    reader = signed_in_client(closed_app, VIEWER_SECRET)
    assert reader.get("/ui/jobs/existing").status_code == 200
    document = client.get(f"{CANONICAL}/openapi.json").get_json()
    assert document["paths"][f"{CANONICAL}/jobs"]["get"]["security"] == [{"bearer": []}]
    assert "401" in document["paths"][f"{CANONICAL}/jobs/{{job_id}}"]["get"]["responses"]


def test_secrets_never_reach_a_log_line(settings: Settings, store: MongoStore, caplog: pytest.LogCaptureFixture) -> None:
    app = make(settings.replace(log_level="DEBUG"))
    client = app.test_client()
    try:
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("cronhive.test").warning("headers %s", {"Authorization": f"Bearer {CI_SECRET}"})
            for secret in (*SECRETS, "wrong-guess"):
                client.post(f"{CANONICAL}/jobs", json=job_body(), headers=bearer(secret))
                signed_in_client(app, secret) if secret != "wrong-guess" else None
        from cronhive.logs import JsonFormatter

        lines = [JsonFormatter().format(record) for record in caplog.records]
        assert lines, "nothing was logged: the check would prove nothing"
        for secret in SECRETS:
            assert not any(secret in line for line in lines), secret
        assert any("Bearer ***" in line for line in lines)
        for secret in SECRETS:
            assert secret not in repr(app.extensions["cronhive"].settings)
    finally:
        close_app(app)
