"""Fixtures: the real MongoDB-wire store, the real RabbitMQ, the app and its client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.broker import RunPublisher
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    with services.mongodb() as uri:
        yield uri


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    with services.rabbitmq() as url:
        yield url


@pytest.fixture
def settings(mongodb_uri: str, rabbitmq_url: str) -> Iterator[Settings]:
    """Settings of one test: its own database and its own runs queue."""
    tag = uuid.uuid4().hex[:10]
    env = {
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"cronhive_test_{tag}",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "MONGODB_TIMEOUT_MS": "2000",
        "LOG_LEVEL": os.environ.get("TEST_LOG_LEVEL", "WARNING"),
    }
    settings = Settings.from_env(env)
    yield settings
    services.delete_queues(rabbitmq_url, settings.runs_queue, f"{settings.runs_queue}.DQ", f"{settings.runs_queue}.XQ")


@pytest.fixture
def store(settings: Settings) -> Iterator[MongoStore]:
    store = MongoStore.open(settings)
    store.ensure_indexes()
    yield store
    store.client.drop_database(settings.mongodb_db)
    store.close()


@pytest.fixture
def publisher(settings: Settings) -> Iterator[RunPublisher]:
    publisher = RunPublisher.open(settings)
    yield publisher
    publisher.close()


@pytest.fixture
def app(settings: Settings, store: MongoStore) -> Iterator[Flask]:
    app = create_app(settings)
    app.testing = True
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
