"""Prometheus metrics of every cronhive process (SPEC §6).

The series are defined here, in three groups — ``api``, ``scheduler`` and
``worker`` — and a group is created in a process only when that process first
uses one of its series (``metrics.SLOTS_FIRED`` …) or `declare`\\ s the group at
start. So each process exposes its own series only: a worker's ``/metrics`` has
no ``cronhive_scheduler_is_leader``, and an ``absent()`` alert on a scheduler
series is not masked by the other processes.

Processes that run several OS processes behind one port (gunicorn's API workers,
the dramatiq worker's processes) use prometheus_client's multiprocess mode:
``PROMETHEUS_MULTIPROC_DIR`` is set before the children start
(`prepare_multiprocess_dir`, ``worker.__main__``), every process writes its samples
there, and `exposition` aggregates them all (`MultiProcessCollector`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def _api_series() -> dict[str, Any]:
    return {
        "API_REQUESTS": Counter("cronhive_api_requests_total", "API requests by route, method and status.",
                                ["route", "method", "status"]),
        "API_LATENCY": Histogram("cronhive_api_request_duration_seconds", "API request latency by route and method.",
                                 ["route", "method"], buckets=LATENCY_BUCKETS),
        "API_RUNS_CANCELLED": Counter("cronhive_api_runs_cancelled_total",
                                      "Runs cancelled through the API, by the status they had (pending, queued: "
                                      "recorded cancelled at once; running: asked to stop).", ["from_status"]),
        "API_BACKFILL_RUNS": Counter("cronhive_api_backfill_runs_total", "Runs created by backfills."),
    }


def _scheduler_series() -> dict[str, Any]:
    return {
        "SCHEDULER_IS_LEADER": Gauge("cronhive_scheduler_is_leader", "1 while this scheduler holds the leader lease.",
                                     multiprocess_mode="livesum"),
        "SCHEDULER_TERM": Gauge("cronhive_scheduler_term", "Leader term (fencing token) this scheduler last held.",
                                multiprocess_mode="max"),
        "SLOTS_FIRED": Counter("cronhive_scheduler_slots_fired_total", "Slots published to RabbitMQ (confirmed)."),
        "SLOTS_MISSED": Counter("cronhive_scheduler_slots_missed_total",
                                "Slots missed (outage, disabled) and coalesced or dropped by the misfire policy."),
        "SLOTS_SKIPPED": Counter("cronhive_scheduler_slots_skipped_total",
                                 "Slots recorded skipped (overlap or misfire policy).", ["reason"]),
        "FIRE_LATENESS": Histogram("cronhive_scheduler_fire_lateness_seconds", "Slot instant to publish confirm.",
                                   buckets=LATENCY_BUCKETS),
        "SLOTS_MISSED_AUDIT": Counter("cronhive_slots_missed",
                                      "Slots found missed by the leader's audit: past due plus grace and no run "
                                      "(each slot counted once, across leaders)."),
        "UNPUBLISHED_RUNS": Gauge("cronhive_scheduler_unpublished_runs",
                                  "Runs created but not yet confirmed by RabbitMQ.", multiprocess_mode="livesum"),
    }


def _worker_series() -> dict[str, Any]:
    return {
        "WORKER_RUNS": Counter("cronhive_worker_runs_total", "Runs finished by this worker, by outcome.", ["outcome"]),
        "WORKER_RUN_DURATION": Histogram("cronhive_worker_run_duration_seconds", "Handler run duration.",
                                         buckets=DURATION_BUCKETS),
        "LEASE_RENEW_FAILURES": Counter("cronhive_worker_lease_renew_failures_total",
                                        "Job lease renewals that failed or found the lease lost."),
        "NOTIFICATIONS": Counter("cronhive_worker_notifications_total",
                                 "Notification delivery attempts by event and outcome (delivered, retried, failed).",
                                 ["event", "outcome"]),
    }


GROUPS: dict[str, Callable[[], dict[str, Any]]] = {
    "api": _api_series,
    "scheduler": _scheduler_series,
    "worker": _worker_series,
}
#: Series name (module attribute) -> its group.
SERIES_GROUP: dict[str, str] = {
    "API_REQUESTS": "api", "API_LATENCY": "api", "API_RUNS_CANCELLED": "api", "API_BACKFILL_RUNS": "api",
    "SCHEDULER_IS_LEADER": "scheduler", "SCHEDULER_TERM": "scheduler", "SLOTS_FIRED": "scheduler",
    "SLOTS_MISSED": "scheduler", "SLOTS_SKIPPED": "scheduler", "FIRE_LATENESS": "scheduler",
    "UNPUBLISHED_RUNS": "scheduler", "SLOTS_MISSED_AUDIT": "scheduler",
    "WORKER_RUNS": "worker", "WORKER_RUN_DURATION": "worker", "LEASE_RENEW_FAILURES": "worker",
    "NOTIFICATIONS": "worker",
}

_created: dict[str, Any] = {}
_declared: set[str] = set()
_lock = threading.Lock()


def declare(*groups: str) -> None:
    """Create the series of ``groups`` now (idempotent), so they are exposed from
    the start (at zero) rather than from their first use."""
    with _lock:
        for group in groups:
            if group not in GROUPS:
                raise ValueError(f"unknown metrics group {group!r} (one of {', '.join(GROUPS)})")
            if group not in _declared:
                _created.update(GROUPS[group]())
                _declared.add(group)


def __getattr__(name: str) -> Any:
    """``metrics.SLOTS_FIRED`` and the like: created with their group on first use."""
    group = SERIES_GROUP.get(name)
    if group is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _created:
        declare(group)
    return _created[name]


def prepare_multiprocess_dir(name: str) -> str:
    """A fresh directory for multiprocess metrics, exported in the environment
    (call in the parent before its children import prometheus_client)."""
    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        Path(existing).mkdir(parents=True, exist_ok=True)
        return existing
    path = tempfile.mkdtemp(prefix=f"cronhive-{name}-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def remove_multiprocess_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def exposition() -> tuple[bytes, str]:
    """The text exposition of this process (or of all processes, in multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
