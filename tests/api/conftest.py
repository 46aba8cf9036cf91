"""Helpers of the API tests: both path forms, a movable clock, the error shape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cronhive.api.app import Services

CANONICAL = "/api/v1/cron"
#: The seed writes every path with the base twice; it is served as an alias.
DOUBLED = "/api/v1/cron/api/v1/cron"

#: The seed's create request, byte for byte what the contract shows.
SEED_CREATE = """{
  "name": "Daily Reminder Check",
  "schedule": "0 8 * * *",
  "handler": "reminder_scheduler",
  "enabled": true
}"""
SEED_UPDATE = """{
  "schedule": "0 7 * * *",
  "enabled": true
}"""
#: The instant the seed's examples were taken at (its created_at).
SEED_NOW = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)

Z_SECONDS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


class FakeClock:
    """The app's clock, moved by hand (lease expiry, next slots, timestamps)."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current

    def set(self, instant: datetime) -> None:
        self.current = instant


@pytest.fixture(params=[CANONICAL, DOUBLED], ids=["canonical", "doubled"])
def base(request: pytest.FixtureRequest) -> str:
    """Both path forms of every endpoint."""
    return request.param


@pytest.fixture
def clock(app: Flask) -> Iterator[FakeClock]:
    """Replace the app's database clock with one the test moves (start: the seed's instant)."""
    services: Services = app.extensions["cronhive"]
    original = services.clock
    fake = FakeClock(SEED_NOW)
    services.clock = fake
    yield fake
    services.clock = original


def job_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Nightly export", "schedule": "0 3 * * *", "handler": "noop"}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def create(client: FlaskClient, base: str = CANONICAL, **overrides: Any) -> dict[str, Any]:
    response = client.post(f"{base}/jobs", json=job_body(**overrides))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def assert_error(response: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code", "message", "details"}}`` (plus
    ``lock_acquired`` beside it for lease refusals), as JSON, with ``status``."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict) and set(body) <= {"error", "lock_acquired"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    return body
