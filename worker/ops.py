"""The worker's ``/healthz``, ``/readyz`` and ``/metrics`` on METRICS_HOST:METRICS_PORT.

Run by the dramatiq CLI as a fork process (``--fork-function cronhive.worker.ops:serve``),
one per worker process tree: it serves the metrics every worker process of the
tree writes to the shared multiprocess directory (`cronhive.metrics`): the
worker's series (declared here, so they exist at zero before the first run) and
Dramatiq's own Prometheus middleware series.
"""

from __future__ import annotations

import logging
import time

from cronhive import metrics
from cronhive.logs import configure_logging
from cronhive.ops_server import OpsServer, rabbitmq_check, readiness_checks
from cronhive.settings import Settings
from cronhive.store import MongoStore

__all__ = ["rabbitmq_check", "serve"]  # worker.__main__ checks RabbitMQ with rabbitmq_check at start

log = logging.getLogger("cronhive.worker.ops")


def serve() -> int:
    """The fork process's body: serve until the dramatiq master stops it. A port that
    is taken is logged and the process ends (the workers work without it)."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    metrics.declare("worker")
    store = MongoStore.open(settings)
    server = OpsServer(settings.metrics_host, settings.metrics_port, readiness_checks(settings, store))
    try:
        try:
            server.start()
        except OSError as exc:
            log.warning("health and metrics server not started on %s:%d: %s", settings.metrics_host,
                        settings.metrics_port, exc.strerror or exc)
            return 0
        while True:
            time.sleep(3600)
    finally:
        server.stop()
        store.close()
