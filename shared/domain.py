"""The job and run model: field names, policies, ids and time formatting.

Job documents (collection ``jobs``, ``_id`` = job_id) hold the definition, the
scheduling state (``next_fire_at``: the next slot instant by the cron rules;
``due_at``: that slot plus the job's jitter, null while disabled — the
scheduler's index), the outcome of the last run, and the job's run lease
(``lease`` / ``lease_term``, see `cronhive.leases`).

Run documents (collection ``runs``, ``_id`` = run_id) are one per slot
(unique on ``job_id`` + ``scheduled_for`` for scheduled runs) or per manual
trigger.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

UTC = UTC

JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
JOB_ID_RE = re.compile(JOB_ID_PATTERN)

MISFIRE_POLICIES = ("fire_once", "skip", "fire_all")
OVERLAP_POLICIES = ("forbid", "allow", "buffer_one")
JOB_STATUSES = ("active", "disabled")
TRIGGERS = ("schedule", "manual")

#: ``pending``: created, publish not yet confirmed by RabbitMQ (re-published if
#: never confirmed); ``queued`` only after the broker's confirm.
RUN_STATUSES = ("pending", "queued", "running", "succeeded", "failed", "timed_out", "skipped", "abandoned")
FINAL_RUN_STATUSES = ("succeeded", "failed", "timed_out", "skipped", "abandoned")

DEFAULT_POLICIES: dict[str, Any] = {
    "misfire_policy": "fire_once",
    "misfire_grace_s": 60,
    "overlap_policy": "forbid",
    "jitter_s": 0,
    "timeout_s": 3600,
    "max_retries": 0,
}
MAX_FIRE_ALL = 100


def utcnow() -> datetime:
    """The current instant, whole milliseconds (what MongoDB stores)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_instant(value: datetime | None) -> str | None:
    """UTC ISO-8601 with ``Z`` and whole seconds: ``2026-03-26T08:00:00Z``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slugify(name: str) -> str:
    """A job-id-safe slug of a display name (``Daily Reminder Check`` → ``daily_reminder_check``)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    return slug or "job"


def job_id_for_name(name: str, attempt: int = 0) -> str:
    """``job_`` + slug of the name; a numeric suffix from the second attempt on."""
    suffix = "" if attempt == 0 else f"_{attempt + 1}"
    base = ("job_" + slugify(name))[: 64 - len(suffix)].rstrip("_-")
    return base + suffix


def new_run_id(at: datetime) -> str:
    """``run_YYYYMMDD_HHMMSS_<random>``: the UTC instant plus a unique suffix."""
    return f"run_{at.astimezone(UTC).strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(4)}"


def jitter_offset(job_id: str, jitter_s: int) -> timedelta:
    """A deterministic per-job offset in [0, jitter_s) seconds (ms resolution)."""
    if jitter_s <= 0:
        return timedelta(0)
    digest = hashlib.sha256(job_id.encode()).digest()
    millis = int.from_bytes(digest[:8], "big") % (jitter_s * 1000)
    return timedelta(milliseconds=millis)


def job_status(doc: dict[str, Any]) -> str:
    return "active" if doc.get("enabled") else "disabled"


def lease_is_held(doc: dict[str, Any], now: datetime) -> bool:
    lease = doc.get("lease")
    return bool(lease) and lease.get("expires_at") is not None and lease["expires_at"] > now


def job_view(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The job detail the API shows (SPEC §3): every field present, null when unset."""
    return {
        "job_id": doc["_id"],
        "name": doc["name"],
        "schedule": doc["schedule"],
        "timezone": doc.get("timezone", "UTC"),
        "handler": doc["handler"],
        "args": doc.get("args") or {},
        "enabled": bool(doc.get("enabled")),
        "status": job_status(doc),
        "lock_acquired": lease_is_held(doc, now),
        "last_triggered_at": format_instant(doc.get("last_triggered_at")),
        "last_run_id": doc.get("last_run_id"),
        "last_run_status": doc.get("last_run_status"),
        "last_run_duration_ms": doc.get("last_run_duration_ms"),
        "next_trigger_at": format_instant(doc.get("due_at")) if doc.get("enabled") else None,
        "created_at": format_instant(doc.get("created_at")),
        "updated_at": format_instant(doc.get("updated_at")),
        "disabled_reason": doc.get("disabled_reason"),
        **{key: doc.get(key, default) for key, default in DEFAULT_POLICIES.items()},
    }


def job_summary(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A job in the list: the seed's fields first, then the rest of the detail."""
    return job_view(doc, now)


def run_view(doc: dict[str, Any]) -> dict[str, Any]:
    """One run as the API shows it (SPEC §3)."""
    return {
        "run_id": doc["_id"],
        "job_id": doc["job_id"],
        "trigger": doc["trigger"],
        "scheduled_for": format_instant(doc.get("scheduled_for")),
        "status": doc["status"],
        "attempt": doc.get("attempt", 0),
        "worker": doc.get("worker"),
        "created_at": format_instant(doc.get("created_at")),
        "queued_at": format_instant(doc.get("queued_at")),
        "started_at": format_instant(doc.get("started_at")),
        "finished_at": format_instant(doc.get("finished_at")),
        "duration_ms": doc.get("duration_ms"),
        "lateness_ms": doc.get("lateness_ms"),
        "error": error_view(doc.get("error")),
    }


def error_view(error: Any) -> Any:
    """A run's ``error`` as the API shows it: null, or ``{type, message, traceback, ...}``
    where ``traceback`` (the handler's last frames, when a handler raised) is null otherwise."""
    if not isinstance(error, dict):
        return error
    return {**error, "traceback": error.get("traceback")}
