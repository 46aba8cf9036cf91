"""``python -m cronhive.scheduler`` / ``cronhive scheduler``: one scheduler process.

Start-up, in order:

1. Settings from the environment, once (`Settings.from_env`); invalid → one line
   on stderr, exit code 2.
2. JSON logging at ``LOG_LEVEL``.
3. MongoDB: ping and ensure the indexes the scheduler relies on ("due",
   "slot_key", "by_status"), waiting up to ``MONGODB_TIMEOUT_MS``; RabbitMQ:
   declare the runs queue. Either unreachable → ONE error line naming the
   (redacted) URL and exit code 1, never a traceback. Exiting, not retrying,
   is deliberate at start: a supervisor (Kubernetes, Compose, systemd) restarts
   the process with backoff and shows the failure, and ``make up`` checks both
   services before it starts schedulers. Once running, outages are ridden out
   instead (see `scheduler.loop`): a running leader must keep its slots, and
   standbys must stay ready to take over when the service returns.
4. The health and metrics server on ``METRICS_HOST:METRICS_PORT`` (0: off); a
   port that is taken is logged and skipped (the scheduler works without it).
5. `SchedulerLoop.run` until SIGTERM or SIGINT; then it releases the leader
   lease (a standby takes over at once) and removes its heartbeat: exit code 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from types import FrameType

from cronhive.broker import RunPublisher
from cronhive.clock import DatabaseClock
from cronhive.errors import BrokerUnavailable, ConfigurationError, StoreUnavailable
from cronhive.leases import process_holder
from cronhive.logs import configure_logging
from cronhive.ops_server import OpsServer, readiness_checks
from cronhive.scheduler.loop import SchedulerLoop
from cronhive.settings import Settings, redact_url
from cronhive.store import MongoStore

log = logging.getLogger("cronhive.scheduler")

EXIT_UNAVAILABLE = 1
EXIT_CONFIGURATION = 2


def check_services(settings: Settings, store: MongoStore, publisher: RunPublisher) -> None:
    """Raise `StoreUnavailable` / `BrokerUnavailable` (with the redacted URL) when either is down."""
    store.ping()
    store.ensure_indexes()
    publisher.ping()


def start_ops_server(settings: Settings, store: MongoStore) -> OpsServer | None:
    server = OpsServer(settings.metrics_host, settings.metrics_port, readiness_checks(settings, store))
    try:
        return server.start()
    except OSError as exc:
        log.warning("health and metrics server not started on %s:%d: %s", settings.metrics_host,
                    settings.metrics_port, exc.strerror or exc)
        return None


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"cronhive scheduler: {exc.message}", file=sys.stderr)
        return EXIT_CONFIGURATION
    configure_logging(settings.log_level)
    store = MongoStore.open(settings)
    publisher = RunPublisher.open(settings, connection_name=f"cronhive-scheduler:{socket.gethostname()}:{os.getpid()}")
    ops: OpsServer | None = None
    try:
        try:
            check_services(settings, store, publisher)
            clock = DatabaseClock(store)
            clock.sync()
        except StoreUnavailable:
            log.error("MongoDB is unreachable at %s; the scheduler cannot start",
                      redact_url(settings.mongodb_uri), extra={"url": redact_url(settings.mongodb_uri)})
            return EXIT_UNAVAILABLE
        except BrokerUnavailable:
            log.error("RabbitMQ is unreachable at %s; the scheduler cannot start",
                      redact_url(settings.rabbitmq_url), extra={"url": redact_url(settings.rabbitmq_url)})
            return EXIT_UNAVAILABLE
        loop = SchedulerLoop(settings, store, publisher, clock, process_holder())

        def on_signal(signum: int, frame: FrameType | None) -> None:
            loop.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        ops = start_ops_server(settings, store)
        loop.run()
        return 0
    finally:
        if ops is not None:
            ops.stop()
        publisher.close()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
