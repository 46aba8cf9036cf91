"""One frozen settings object per process, built from environment variables.

Every variable, its default and its meaning is listed in `VARIABLES` (the README's
configuration table is this list). Nothing here runs at import time: a process
calls `Settings.from_env()` once in its start step and passes the object down.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cronhive.errors import ConfigurationError

if TYPE_CHECKING:
    from cronhive.http_calls import DestinationGuard

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_MONGODB_URI = "mongodb://127.0.0.1:27017"
MIN_UI_SECRET_KEY_LENGTH = 32

#: env var -> (settings field, default as text, description). The README table.
VARIABLES: dict[str, tuple[str, str, str]] = {
    "MONGODB_URI": ("mongodb_uri", "unset", "MongoDB connection string. Unset under `make up`: an embedded SecantusDB is started with durable commits; other processes then default to `mongodb://127.0.0.1:27017`."),
    "MONGODB_DB": ("mongodb_db", "cronhive", "Database name."),
    "MONGODB_TIMEOUT_MS": ("mongodb_timeout_ms", "3000", "Server-selection and connect timeout; past it requests answer 503."),
    "RABBITMQ_URL": ("rabbitmq_url", DEFAULT_RABBITMQ_URL, "AMQP URL, vhost included (write the default vhost as `%2F`)."),
    "RUNS_QUEUE": ("runs_queue", "cronhive.runs", "RabbitMQ queue that carries runs to workers."),
    "API_HOST": ("api_host", "127.0.0.1", "Address the API binds to."),
    "API_PORT": ("api_port", "8080", "Port the API binds to."),
    "API_WORKERS": ("api_workers", "2", "gunicorn worker processes for the API."),
    "API_TOKEN": ("api_token", "unset", "When set, every mutating endpoint requires `Authorization: Bearer <token>`, and every action of the dashboard a sign-in with it."),
    "UI_SECRET_KEY": ("ui_secret_key", "unset", "Key (at least 32 characters) that signs the dashboard's session cookie (sign-in, CSRF token). Unset: a random key is generated once per deployment and kept in MongoDB (collection `ui_keys`), so every API process and replica signs alike; set it to keep that key out of the database."),
    "DATA_DIR": ("data_dir", "./.data", "Where the embedded MongoDB keeps its files under `make up`."),
    "EMBEDDED_MONGODB_PORT": ("embedded_mongodb_port", "27017", "Port of the embedded MongoDB under `make up`."),
    "HANDLER_MODULES": ("handler_modules", "unset", "Comma-separated Python modules that register extra handlers."),
    "JOB_LEASE_S": ("job_lease_s", "30", "Duration of a job's run lease; renewed at a third of it."),
    "LEADER_LEASE_S": ("leader_lease_s", "10", "Duration of the scheduler leader lease; renewed at a third of it."),
    "SCHEDULER_BATCH": ("scheduler_batch", "200", "Due jobs the leader scheduler plans, writes and publishes per batch."),
    "SCHEDULER_MAX_SLEEP_MS": ("scheduler_max_sleep_ms", "500", "Longest the scheduler sleeps between looks at the jobs (new and changed jobs are seen within it)."),
    "RUN_HISTORY_LIMIT": ("run_history_limit", "1000", "Runs kept per job."),
    "RUN_HISTORY_DAYS": ("run_history_days", "30", "Days a run is kept."),
    "RETRY_BACKOFF_MS": ("retry_backoff_ms", "15000", "Backoff before a failed run's first retry; doubled for each further attempt (max 1 hour)."),
    "LOG_LEVEL": ("log_level", "INFO", "Log level of every process."),
    "METRICS_HOST": ("metrics_host", "127.0.0.1", "Address the scheduler's and worker's health/metrics server binds to (0.0.0.0 in containers)."),
    "METRICS_PORT": ("metrics_port", "9100", "Port of the scheduler's and worker's `/healthz`, `/readyz` and `/metrics`; 0 turns the server off."),
    "HTTP_HANDLER_ALLOWED_HOSTS": ("http_handler_allowed_hosts", "unset", "Comma-separated host names, IPs and CIDRs the `http` handler and notifications may call. Unset: any public address; loopback, link-local, private and unique-local addresses are refused unless listed. Set: only what it lists."),
    "NOTIFY_SECRET": ("notify_secret", "unset", "When set, every notification carries `X-Cronhive-Signature: sha256=<hex HMAC-SHA256 of the raw body>` keyed with it."),
    "NOTIFY_MAX_ATTEMPTS": ("notify_max_attempts", "8", "Delivery attempts of one notification before it is recorded `failed`."),
    "NOTIFY_BACKOFF_MS": ("notify_backoff_ms", "5000", "Wait before a notification's second delivery attempt; doubled for each further one (max 10 minutes)."),
    "NOTIFY_TIMEOUT_S": ("notify_timeout_s", "10", "Timeout of one notification request; a worker's claim on a delivery lasts twice that plus 5 s."),
}


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for log lines and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str = DEFAULT_MONGODB_URI
    mongodb_db: str = "cronhive"
    mongodb_timeout_ms: int = 3000
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL
    runs_queue: str = "cronhive.runs"
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_workers: int = 2
    api_token: str | None = None
    ui_secret_key: str | None = None
    data_dir: str = "./.data"
    embedded_mongodb_port: int = 27017
    handler_modules: tuple[str, ...] = field(default_factory=tuple)
    job_lease_s: int = 30
    leader_lease_s: int = 10
    scheduler_batch: int = 200
    scheduler_max_sleep_ms: int = 500
    run_history_limit: int = 1000
    run_history_days: int = 30
    retry_backoff_ms: int = 15000
    log_level: str = "INFO"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100
    #: True when MONGODB_URI was not set (make up then embeds SecantusDB).
    mongodb_uri_from_default: bool = True
    http_handler_allowed_hosts: str = ""
    notify_secret: str | None = None
    notify_max_attempts: int = 8
    notify_backoff_ms: int = 5000
    notify_timeout_s: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        uri = env.get("MONGODB_URI") or None
        modules = tuple(m.strip() for m in env.get("HANDLER_MODULES", "").split(",") if m.strip())
        settings = cls(
            mongodb_uri=uri or DEFAULT_MONGODB_URI,
            mongodb_db=env.get("MONGODB_DB") or "cronhive",
            mongodb_timeout_ms=_int(env, "MONGODB_TIMEOUT_MS", 3000, minimum=100),
            rabbitmq_url=env.get("RABBITMQ_URL") or DEFAULT_RABBITMQ_URL,
            runs_queue=env.get("RUNS_QUEUE") or "cronhive.runs",
            api_host=env.get("API_HOST") or "127.0.0.1",
            api_port=_int(env, "API_PORT", 8080, minimum=0),
            api_workers=_int(env, "API_WORKERS", 2, minimum=1),
            api_token=env.get("API_TOKEN") or None,
            ui_secret_key=env.get("UI_SECRET_KEY") or None,
            data_dir=env.get("DATA_DIR") or "./.data",
            embedded_mongodb_port=_int(env, "EMBEDDED_MONGODB_PORT", 27017, minimum=1),
            handler_modules=modules,
            job_lease_s=_int(env, "JOB_LEASE_S", 30, minimum=3),
            leader_lease_s=_int(env, "LEADER_LEASE_S", 10, minimum=3),
            scheduler_batch=_int(env, "SCHEDULER_BATCH", 200, minimum=1),
            scheduler_max_sleep_ms=_int(env, "SCHEDULER_MAX_SLEEP_MS", 500, minimum=10),
            run_history_limit=_int(env, "RUN_HISTORY_LIMIT", 1000, minimum=1),
            run_history_days=_int(env, "RUN_HISTORY_DAYS", 30, minimum=1),
            retry_backoff_ms=_int(env, "RETRY_BACKOFF_MS", 15000, minimum=1),
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            metrics_host=env.get("METRICS_HOST") or "127.0.0.1",
            metrics_port=_int(env, "METRICS_PORT", 9100, minimum=0),
            mongodb_uri_from_default=uri is None,
            http_handler_allowed_hosts=env.get("HTTP_HANDLER_ALLOWED_HOSTS") or "",
            notify_secret=env.get("NOTIFY_SECRET") or None,
            notify_max_attempts=_int(env, "NOTIFY_MAX_ATTEMPTS", 8, minimum=1),
            notify_backoff_ms=_int(env, "NOTIFY_BACKOFF_MS", 5000, minimum=1),
            notify_timeout_s=_int(env, "NOTIFY_TIMEOUT_S", 10, minimum=1),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not self.mongodb_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigurationError(f"MONGODB_URI must start with mongodb:// or mongodb+srv://, got {redact_url(self.mongodb_uri)}")
        if not self.rabbitmq_url.startswith(("amqp://", "amqps://")):
            raise ConfigurationError(f"RABBITMQ_URL must start with amqp:// or amqps://, got {redact_url(self.rabbitmq_url)}")
        if urlsplit(self.rabbitmq_url).path == "//":
            raise ConfigurationError("RABBITMQ_URL ends in '//' (an empty vhost); write the default vhost as %2F")
        if self.ui_secret_key is not None and len(self.ui_secret_key) < MIN_UI_SECRET_KEY_LENGTH:
            raise ConfigurationError(f"UI_SECRET_KEY must be at least {MIN_UI_SECRET_KEY_LENGTH} characters long")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigurationError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        self.destination_guard()  # a bad HTTP_HANDLER_ALLOWED_HOSTS entry is a ConfigurationError

    def destination_guard(self) -> DestinationGuard:
        """The SSRF guard of the ``http`` handler and of notifications (HTTP_HANDLER_ALLOWED_HOSTS)."""
        from cronhive.http_calls import DestinationGuard

        return DestinationGuard.parse(self.http_handler_allowed_hosts)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)
