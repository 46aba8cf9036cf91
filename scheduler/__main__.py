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
from collections.abc import Sequence
from types import FrameType

from cronhive.broker import RunPublisher
from cronhive.clock import DatabaseClock
from cronhive.errors import BrokerUnavailable, ConfigurationError, StoreUnavailable
from cronhive.leases import process_holder
from cronhive.logs import configure_logging
from cronhive.ops_server import OpsServer, readiness_checks
from cronhive.scheduler.loop import SchedulerLoop
from cronhive.settings import Settings, environment_help, redact_url
from cronhive.store import MongoStore

log = logging.getLogger("cronhive.scheduler")

EXIT_UNAVAILABLE = 1
EXIT_CONFIGURATION = 2

HELP_VARIABLES = ("MONGODB_URI", "MONGODB_DB", "MONGODB_TIMEOUT_MS", "RABBITMQ_URL", "RUNS_QUEUE",
                  "LEADER_LEASE_S", "JOB_LEASE_S", "SCHEDULER_BATCH", "SCHEDULER_MAX_SLEEP_MS", "LOG_LEVEL",
                  "METRICS_HOST", "METRICS_PORT")

HELP = """usage: cronhive scheduler

A scheduler process: it competes for the leader lease in MongoDB; the leader
plans each due slot of every enabled job as one run record and publishes it on
the runs queue, the others stand by and take over within a lease when the
leader stops. Run two or more. SIGTERM or SIGINT stops it (the leader hands the
lease over at once). It takes no arguments.

options:
  -h, --help  show this help and exit
"""


def refuse_arguments(args: Sequence[str]) -> int | None:
    """``--help`` → the help (exit 0); any other argument → refused (exit 2); none → None
    (start). Nothing is started or read before this answers."""
    if not args:
        return None
    if any(arg in ("-h", "--help") for arg in args):
        print(HELP + "\n" + environment_help(HELP_VARIABLES), end="")
        return 0
    print(f"cronhive scheduler: takes no arguments, got {' '.join(args)!r}\n\n{HELP}", file=sys.stderr, end="")
    return EXIT_CONFIGURATION


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


def main(argv: Sequence[str] | None = None) -> int:
    answered = refuse_arguments(sys.argv[1:] if argv is None else argv)
    if answered is not None:
        return answered
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
