"""Prometheus metrics of every cronhive process (SPEC §6).

Processes that run several OS processes behind one port (gunicorn's API workers,
the dramatiq worker's processes) use prometheus_client's multiprocess mode:
`prepare_multiprocess_dir` sets ``PROMETHEUS_MULTIPROC_DIR`` before the
children start, and `exposition` aggregates every process's samples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# -- API ----------------------------------------------------------------------
API_REQUESTS = Counter("cronhive_api_requests_total", "API requests by route, method and status.",
                       ["route", "method", "status"])
API_LATENCY = Histogram("cronhive_api_request_duration_seconds", "API request latency by route and method.",
                        ["route", "method"], buckets=LATENCY_BUCKETS)

# -- scheduler ----------------------------------------------------------------
SCHEDULER_IS_LEADER = Gauge("cronhive_scheduler_is_leader", "1 while this scheduler holds the leader lease.",
                            multiprocess_mode="livesum")
SCHEDULER_TERM = Gauge("cronhive_scheduler_term", "Leader term (fencing token) this scheduler last held.",
                       multiprocess_mode="max")
SLOTS_FIRED = Counter("cronhive_scheduler_slots_fired_total", "Slots published to RabbitMQ (confirmed).")
SLOTS_MISSED = Counter("cronhive_scheduler_slots_missed_total", "Slots missed (outage, disabled) and coalesced or dropped by the misfire policy.")
SLOTS_SKIPPED = Counter("cronhive_scheduler_slots_skipped_total", "Slots recorded skipped (overlap or misfire policy).",
                        ["reason"])
FIRE_LATENESS = Histogram("cronhive_scheduler_fire_lateness_seconds", "Slot instant to publish confirm.",
                          buckets=LATENCY_BUCKETS)
UNPUBLISHED_RUNS = Gauge("cronhive_scheduler_unpublished_runs", "Runs created but not yet confirmed by RabbitMQ.",
                         multiprocess_mode="livesum")

# -- worker -------------------------------------------------------------------
WORKER_RUNS = Counter("cronhive_worker_runs_total", "Runs finished by this worker, by outcome.", ["outcome"])
WORKER_RUN_DURATION = Histogram("cronhive_worker_run_duration_seconds", "Handler run duration.",
                                buckets=DURATION_BUCKETS)
LEASE_RENEW_FAILURES = Counter("cronhive_worker_lease_renew_failures_total", "Job lease renewals that failed or found the lease lost.")


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
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
