"""API_TOKEN: every mutating endpoint wants ``Authorization: Bearer <token>``;
reads stay open (SPEC §7)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, DOUBLED, assert_error, job_body

TOKEN = "s3cr3t-token"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
BAD_HEADERS = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer nope"},
    "token without Bearer": {"Authorization": TOKEN},
    "basic auth": {"Authorization": "Basic czNjcjN0LXRva2VuOg=="},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token plus more": {"Authorization": f"Bearer {TOKEN}x"},
    "lower-case scheme and spaces": {"Authorization": f"bearer  {TOKEN}"},
}


@pytest.fixture
def secured(settings: Settings, store: MongoStore) -> Iterator[FlaskClient]:
    app: Flask = create_app(settings.replace(api_token=TOKEN))
    try:
        yield app.test_client()
    finally:
        close_app(app)


def mutations(prefix: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", f"{prefix}/jobs", job_body(job_id="guarded")),
        ("PUT", f"{prefix}/jobs/existing", {"enabled": False}),
        ("DELETE", f"{prefix}/jobs/existing", None),
        ("POST", f"{prefix}/jobs/existing/trigger", None),
    ]


@pytest.mark.parametrize("headers", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
@pytest.mark.parametrize("prefix", [CANONICAL, DOUBLED])
def test_mutations_need_the_token(secured: FlaskClient, store: MongoStore, headers: dict[str, str], prefix: str) -> None:
    assert secured.post(f"{CANONICAL}/jobs", json=job_body(job_id="existing"), headers=GOOD).status_code == 201
    before = store.get_job("existing")
    for method, url, body in mutations(prefix):
        response = secured.open(url, method=method, json=body, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert store.get_job("existing") == before
    assert store.jobs.count_documents({}) == 1 and store.runs.count_documents({}) == 0


def test_mutations_with_the_token_work(secured: FlaskClient) -> None:
    statuses = [
        secured.open(url, method=method, json=body, headers=GOOD).status_code
        for method, url, body in [
            ("POST", f"{CANONICAL}/jobs", job_body(job_id="existing")),
            *mutations(DOUBLED)[1:2],
            *mutations(CANONICAL)[3:],
            *mutations(CANONICAL)[2:3],
        ]
    ]
    assert statuses == [201, 200, 202, 200]


def test_token_is_checked_before_the_body(secured: FlaskClient) -> None:
    response = secured.post(f"{CANONICAL}/jobs", data="{not json", content_type="application/json")
    assert_error(response, 401)


@pytest.mark.parametrize("path", ["/jobs", "/jobs/existing", "/handlers", "/scheduler", "/openapi.json"])
def test_reads_stay_open(secured: FlaskClient, path: str) -> None:
    secured.post(f"{CANONICAL}/jobs", json=job_body(job_id="existing"), headers=GOOD)
    assert secured.get(f"{CANONICAL}{path}").status_code == 200
    assert secured.get(f"{DOUBLED}{path}").status_code == 200


def test_preview_computes_nothing_stored_and_stays_open(secured: FlaskClient) -> None:
    response = secured.post(f"{CANONICAL}/schedules/preview", json={"schedule": "@daily", "count": 1})
    assert response.status_code == 200


def test_openapi_declares_the_bearer_scheme(secured: FlaskClient) -> None:
    doc = secured.get(f"{CANONICAL}/openapi.json").get_json()
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer") and "read" in scheme["description"]
    assert doc["paths"]["/api/v1/cron/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "401" in doc["paths"]["/api/v1/cron/jobs/{job_id}/trigger"]["post"]["responses"]
    assert "security" not in doc["paths"]["/api/v1/cron/jobs"]["get"]
