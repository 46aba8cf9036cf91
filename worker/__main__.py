"""``python -m cronhive.worker --processes N --threads N`` (what ``cronhive worker`` runs).

Checks the settings and that MongoDB and RabbitMQ answer (one clear line and a
non-zero exit otherwise), prepares the multiprocess metrics directory, then runs
the ``dramatiq`` CLI on `worker.broker` in this process: the dramatiq master and
its worker processes form one process tree, so killing one worker tree takes no
other down.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile

from cronhive.errors import ConfigurationError, Unavailable
from cronhive.logs import configure_logging
from cronhive.settings import Settings

log = logging.getLogger("cronhive.worker")

#: prometheus_client picks multiprocess mode from this variable at import time.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cronhive worker", description="Dramatiq workers that execute runs.")
    parser.add_argument("--processes", "-p", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", "-t", type=int, default=4, help="threads per worker process (default 4)")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.threads < 1:
        parser.error("--processes and --threads must be at least 1")
    return args


def check_handler_modules(settings: Settings) -> None:
    """Import HANDLER_MODULES once here, so a broken one is one clear line, not a
    traceback in every worker process (raises `ConfigurationError`)."""
    from cronhive.handlers import load_handler_modules

    load_handler_modules(settings.handler_modules)


def check_services(settings: Settings) -> None:
    """Raise `Unavailable` naming the URL when MongoDB or RabbitMQ does not answer."""
    from cronhive.store import MongoStore
    from cronhive.worker.ops import rabbitmq_check

    store = MongoStore.open(settings)
    try:
        store.ping()
    finally:
        store.close()
    rabbitmq_check(settings)


def prepare_metrics_dir() -> str | None:
    """A fresh multiprocess metrics directory for this tree (None when one is given).
    Set before anything imports prometheus_client, so every process of the tree
    writes its samples there (dramatiq's middleware metrics too)."""
    if os.environ.get(MULTIPROC_ENV):
        os.environ.setdefault("dramatiq_prom_db", os.environ[MULTIPROC_ENV])
        return None
    path = tempfile.mkdtemp(prefix="cronhive-worker-metrics-")
    os.environ[MULTIPROC_ENV] = path
    os.environ["dramatiq_prom_db"] = path  # noqa: SIM112 - the name dramatiq's Prometheus middleware reads
    return path


def dramatiq_argv(args: argparse.Namespace, settings: Settings) -> list[str]:
    argv = ["cronhive.worker.broker:setup", "--processes", str(args.processes), "--threads", str(args.threads),
            "--skip-logging"]
    if settings.metrics_port:
        argv += ["--fork-function", "cronhive.worker.ops:serve"]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"cronhive worker: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    created = prepare_metrics_dir()
    # prefetch no more messages than there are threads: a long run does not hold
    # a backlog of prefetched messages hostage while other workers idle
    os.environ.setdefault("dramatiq_queue_prefetch", str(args.threads))
    try:
        try:
            check_handler_modules(settings)
            check_services(settings)
        except (ConfigurationError, Unavailable) as exc:
            log.error("%s", exc.message)
            return 1
        from dramatiq.cli import main as dramatiq_main
        from dramatiq.cli import make_argument_parser

        parsed = make_argument_parser().parse_args(dramatiq_argv(args, settings))  # type: ignore[no-untyped-call]
        return int(dramatiq_main(parsed) or 0)  # type: ignore[no-untyped-call]
    finally:
        if created:
            shutil.rmtree(created, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
