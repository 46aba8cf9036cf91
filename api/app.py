"""The Flask app factory.

``create_app(settings=None)`` builds the app; it reads the environment only when
no settings are given, and opens no connection itself (pymongo connects lazily,
RabbitMQ on first publish). ``close_app(app)`` closes what the app created —
never a store or publisher that was handed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from threading import Lock
from typing import Protocol

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from cronhive.api.errors import register_error_handlers
from cronhive.api.metrics import instrument, metrics_bp
from cronhive.api.routes import alias_bp, bp, ops_bp
from cronhive.api.ui import register_ui
from cronhive.broker import RunPublisher
from cronhive.clock import Clock, DatabaseClock
from cronhive.handlers import HandlerRegistry, load_handler_modules
from cronhive.http_calls import DestinationGuard
from cronhive.logs import configure_logging
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.store.protocols import ApiStore

MAX_BODY_BYTES = 64 * 1024

log = logging.getLogger("cronhive.api")


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class Services:
    """What the request handlers use; created in the app's start step."""

    settings: Settings
    store: ApiStore
    publisher: RunPublisher
    handlers: HandlerRegistry
    clock: Clock
    owned: list[Closable] = field(default_factory=list)
    #: the destination guard (HTTP_HANDLER_ALLOWED_HOSTS) http args and notify URLs are checked under
    guard: DestinationGuard = field(default_factory=DestinationGuard)
    _indexes_ready: bool = False
    _lock: Lock = field(default_factory=Lock)

    def ready_store(self) -> ApiStore:
        """The store, with its indexes ensured once (retried while MongoDB is down)."""
        if not self._indexes_ready:
            with self._lock:
                if not self._indexes_ready:
                    self.store.ensure_indexes()
                    self._indexes_ready = True
        return self.store


def create_app(
    settings: Settings | None = None,
    *,
    store: ApiStore | None = None,
    publisher: RunPublisher | None = None,
) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False
    owned: list[Closable] = []
    if store is None:
        store = MongoStore.open(settings)
        owned.append(store)
    if publisher is None:
        publisher = RunPublisher.open(settings)
        owned.append(publisher)
    app.extensions["cronhive"] = Services(
        settings=settings,
        store=store,
        publisher=publisher,
        handlers=load_handler_modules(settings.handler_modules),
        clock=DatabaseClock(store),
        owned=owned,
        guard=settings.destination_guard(),
    )
    register_error_handlers(app)
    app.register_blueprint(bp)
    app.register_blueprint(alias_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(metrics_bp)
    register_ui(app)
    instrument(app)
    return app


def close_app(app: Flask) -> None:
    """Close the clients this app created (shutdown step)."""
    services: Services = app.extensions["cronhive"]
    for resource in services.owned:
        resource.close()
    services.owned.clear()
