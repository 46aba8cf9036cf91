"""The worker's ``/healthz``, ``/readyz`` and ``/metrics`` on METRICS_HOST:METRICS_PORT.

Run by the dramatiq CLI as a fork process (``--fork-function worker.ops:serve``),
one per worker process tree: it serves the metrics every worker process of the
tree writes to the shared multiprocess directory (`shared.metrics`).
"""

from __future__ import annotations

import logging
import time

import pika

from shared.broker import amqp_url
from shared.errors import BrokerUnavailable
from shared.logs import configure_logging
from shared.ops_server import OpsServer
from shared.settings import Settings, redact_url
from shared.store import MongoStore

log = logging.getLogger("cronhive.worker.ops")


def rabbitmq_check(settings: Settings) -> None:
    """Open and close one AMQP connection (no connection kept per probe thread)."""
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url(settings.rabbitmq_url))).close()
    except Exception as exc:  # any failure here means: not reachable
        raise BrokerUnavailable(f"RabbitMQ is unreachable at {redact_url(settings.rabbitmq_url)}: "
                                f"{type(exc).__name__}") from None


def serve() -> int:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    store = MongoStore.open(settings)
    server = OpsServer(settings.metrics_host, settings.metrics_port,
                       {"mongodb": store.ping, "rabbitmq": lambda: rabbitmq_check(settings)})
    try:
        server.start()
        while True:
            time.sleep(3600)
    finally:
        server.stop()
        store.close()
