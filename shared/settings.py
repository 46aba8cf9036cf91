"""One frozen settings object per process, built from environment variables.

Every variable, its default and its meaning is listed in `VARIABLES` (the README's
configuration table is this list). Nothing here runs at import time: a process
calls `Settings.from_env()` once in its start step and passes the object down.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cronhive.enums import ReadAccess, TokenRole
from cronhive.errors import ConfigurationError

if TYPE_CHECKING:
    from cronhive.http_calls import DestinationGuard

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_MONGODB_URI = "mongodb://127.0.0.1:27017"
MIN_UI_SECRET_KEY_LENGTH = 32
#: A token's name: the actor of every change it makes (revisions).
TOKEN_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_TOKEN_NAME = re.compile(TOKEN_NAME_PATTERN)
#: The actor name of the unnamed API_TOKEN, and names changes carry without a token.
ADMIN_TOKEN_NAME = "admin"
RESERVED_TOKEN_NAMES = frozenset({"anonymous", "scheduler"})

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
    "API_TOKEN": ("api_token", "unset", "When set, every mutating endpoint requires `Authorization: Bearer <token>`, and every action of the dashboard a sign-in with it. An unnamed admin token: its changes' actor is `admin`."),
    "API_TOKENS": ("api_tokens", "unset", "Named tokens beside `API_TOKEN`: `name:secret[:read],…` (names `[a-z0-9][a-z0-9_.-]{0,63}`, the actor of every change the token makes; `:read` gives a token that may only read, refused every write with 403; `:admin`, the default, reads and writes). Any token set: a write without one is 401."),
    "API_READS": ("api_reads", "public", "`public`: reads need no token (the seed's contract). `token`: every read needs a token too (`read` or admin), `/healthz`, `/readyz`, `/metrics` and the OpenAPI document stay open, and the dashboard's pages need a sign-in."),
    "UI_SECRET_KEY": ("ui_secret_key", "unset", "Key (at least 32 characters) that signs the dashboard's session cookie (sign-in, CSRF token). Unset: a random key is generated once per deployment and kept in MongoDB (collection `ui_keys`), so every API process and replica signs alike; set it to keep that key out of the database."),
    "DATA_DIR": ("data_dir", "./.data", "Where the embedded MongoDB keeps its files under `make up`."),
    "EMBEDDED_MONGODB_PORT": ("embedded_mongodb_port", "27017", "Port of the embedded MongoDB under `make up`."),
    "HANDLER_MODULES": ("handler_modules", "unset", "Comma-separated Python modules that register extra handlers."),
    "JOB_LEASE_S": ("job_lease_s", "30", "Duration of a job's run lease; renewed at a third of it."),
    "LEADER_LEASE_S": ("leader_lease_s", "10", "Duration of the scheduler leader lease; renewed at a third of it."),
    "SCHEDULER_BATCH": ("scheduler_batch", "200", "Due jobs the leader scheduler plans, writes and publishes per batch."),
    "SCHEDULER_LOOKAHEAD_MS": ("scheduler_lookahead_ms", "3000", "How far ahead of their instant the leader plans slots (writes their runs and advances their jobs), so at the instant only publishing remains; 0 plans each slot at its instant. A crowd of jobs due together is planned further ahead, by twice the time its planning is measured to take (at most 60 s)."),
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


def environment_help(names: Sequence[str]) -> str:
    """The ``environment:`` section of a process's ``--help``: each variable, its default
    and its meaning (from `VARIABLES`)."""
    width = max(len(name) for name in names)
    lines = ["environment (default in brackets):"]
    for name in names:
        _, default, text = VARIABLES[name]
        lines.append(f"  {name.ljust(width)}  {text.replace('`', '')} [{default}]")
    return "\n".join(lines) + "\n"


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
class ApiToken:
    """One named token of ``API_TOKENS`` (or the unnamed ``API_TOKEN``, named ``admin``).
    The secret is never shown (not in ``repr``, not in errors)."""

    name: str
    secret: str = field(repr=False)
    role: TokenRole = TokenRole.ADMIN

    @property
    def can_write(self) -> bool:
        return self.role == TokenRole.ADMIN


def parse_api_tokens(raw: str) -> tuple[ApiToken, ...]:
    """``name:secret[:read|:admin],…`` → tokens; `ConfigurationError` naming the entry
    (by position and name, never its secret) when one cannot be used."""
    tokens: list[ApiToken] = []
    for position, entry in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":")
        name = parts[0]
        where = f"API_TOKENS entry {position}" + (f" ({name!r})" if _TOKEN_NAME.match(name) else "")
        if len(parts) not in (2, 3):
            raise ConfigurationError(f"{where} must be name:secret or name:secret:read (a secret cannot hold ':' or ',')")
        if not _TOKEN_NAME.match(name):
            raise ConfigurationError(f"{where}: the name must match {TOKEN_NAME_PATTERN}")
        if name in RESERVED_TOKEN_NAMES:
            raise ConfigurationError(f"{where}: the name {name!r} is reserved")
        secret = parts[1]
        if not secret or any(char.isspace() for char in secret):
            raise ConfigurationError(f"{where}: the secret must be non-empty, without spaces")
        role_text = parts[2] if len(parts) == 3 else TokenRole.ADMIN.value
        if role_text not in {role.value for role in TokenRole}:
            raise ConfigurationError(f"{where}: the role must be read or admin, got {role_text[:20]!r}")
        tokens.append(ApiToken(name, secret, TokenRole(role_text)))
    return tuple(tokens)


def _read_access(env: Mapping[str, str]) -> ReadAccess:
    raw = (env.get("API_READS") or ReadAccess.PUBLIC.value).strip().lower()
    try:
        return ReadAccess(raw)
    except ValueError:
        raise ConfigurationError(f"API_READS must be public or token, got {raw[:40]!r}") from None


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
    api_token: str | None = field(default=None, repr=False)
    api_tokens: tuple[ApiToken, ...] = field(default_factory=tuple)
    api_reads: ReadAccess = ReadAccess.PUBLIC
    ui_secret_key: str | None = field(default=None, repr=False)
    data_dir: str = "./.data"
    embedded_mongodb_port: int = 27017
    handler_modules: tuple[str, ...] = field(default_factory=tuple)
    job_lease_s: int = 30
    leader_lease_s: int = 10
    scheduler_batch: int = 200
    scheduler_max_sleep_ms: int = 500
    scheduler_lookahead_ms: int = 3000
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
            api_tokens=parse_api_tokens(env.get("API_TOKENS") or ""),
            api_reads=_read_access(env),
            ui_secret_key=env.get("UI_SECRET_KEY") or None,
            data_dir=env.get("DATA_DIR") or "./.data",
            embedded_mongodb_port=_int(env, "EMBEDDED_MONGODB_PORT", 27017, minimum=1),
            handler_modules=modules,
            job_lease_s=_int(env, "JOB_LEASE_S", 30, minimum=3),
            leader_lease_s=_int(env, "LEADER_LEASE_S", 10, minimum=3),
            scheduler_batch=_int(env, "SCHEDULER_BATCH", 200, minimum=1),
            scheduler_max_sleep_ms=_int(env, "SCHEDULER_MAX_SLEEP_MS", 500, minimum=10),
            scheduler_lookahead_ms=_int(env, "SCHEDULER_LOOKAHEAD_MS", 3000, minimum=0),
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
        self._validate_tokens()

    def destination_guard(self) -> DestinationGuard:
        """The SSRF guard of the ``http`` handler and of notifications (HTTP_HANDLER_ALLOWED_HOSTS)."""
        from cronhive.http_calls import DestinationGuard

        return DestinationGuard.parse(self.http_handler_allowed_hosts)

    def _validate_tokens(self) -> None:
        names = [token.name for token in self.api_tokens]
        if len(set(names)) != len(names):
            raise ConfigurationError("API_TOKENS names each token once (a name is the actor of its changes)")
        if self.api_token and ADMIN_TOKEN_NAME in names:
            raise ConfigurationError(f"API_TOKENS cannot name a token {ADMIN_TOKEN_NAME!r} while API_TOKEN is set "
                                     "(API_TOKEN is the admin token)")
        secrets = [token.secret for token in self.tokens]
        if len(set(secrets)) != len(secrets):
            raise ConfigurationError("two API tokens have the same secret (each token needs its own)")
        if self.api_reads == ReadAccess.TOKEN and not self.tokens:
            raise ConfigurationError("API_READS=token needs a token to read with (set API_TOKEN or API_TOKENS)")

    @property
    def tokens(self) -> tuple[ApiToken, ...]:
        """Every configured token: ``API_TOKEN`` (named ``admin``) first, then ``API_TOKENS``."""
        unnamed = (ApiToken(ADMIN_TOKEN_NAME, self.api_token),) if self.api_token else ()
        return unnamed + self.api_tokens

    @property
    def auth_required(self) -> bool:
        """A token is configured: writes need one (and reads too under ``API_READS=token``)."""
        return bool(self.api_token or self.api_tokens)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)
