"""``python -m cronhive.api`` / ``cronhive api``: serve the app factory under gunicorn.

``--help`` prints cronhive's own help and starts nothing (it is not handed to
gunicorn); any other argument is passed to gunicorn as is, after cronhive's own
options, so it may override them (``--workers 4``, ``--access-logfile -``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from cronhive.errors import ConfigurationError
from cronhive.metrics import prepare_multiprocess_dir
from cronhive.settings import Settings, environment_help

HELP_VARIABLES = ("API_HOST", "API_PORT", "API_WORKERS", "API_TOKEN", "MONGODB_URI", "MONGODB_DB",
                  "MONGODB_TIMEOUT_MS", "RABBITMQ_URL", "RUNS_QUEUE", "HANDLER_MODULES", "LOG_LEVEL")

HELP = """usage: cronhive api [-h] [GUNICORN_OPTION ...]

The REST API (/api/v1/cron/..., /healthz, /readyz, /metrics) under gunicorn on
API_HOST:API_PORT with API_WORKERS worker processes (settings in
cronhive.api.gunicorn_conf). Stateless: run as many as you like behind a load
balancer. SIGTERM stops it gracefully.

options:
  -h, --help         show this help and exit (nothing is started)
  GUNICORN_OPTION    any other argument is passed to gunicorn after cronhive's own
                     options, e.g. --access-logfile - or --workers 4
"""


def wants_help(args: Sequence[str]) -> bool:
    """``-h`` / ``--help`` before any ``--`` (after it, arguments belong to gunicorn)."""
    for arg in args:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def help_text() -> str:
    return HELP + "\n" + environment_help(HELP_VARIABLES)


def gunicorn_argv(settings: Settings, extra: Sequence[str]) -> list[str]:
    """The gunicorn command line: cronhive's config, bind and workers, then ``extra``."""
    passed = [arg for arg in extra if arg != "--"]
    return [
        sys.executable, "-m", "gunicorn",
        "--config", "python:cronhive.api.gunicorn_conf",
        "--bind", f"{settings.api_host}:{settings.api_port}",
        "--workers", str(settings.api_workers),
        *passed,
        "cronhive.api:create_app()",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        sys.stdout.write(help_text())
        sys.exit(0)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"cronhive api: {exc.message}", file=sys.stderr)
        sys.exit(2)
    # gunicorn runs several worker processes: aggregate their metrics
    prepare_multiprocess_dir("api")
    command = gunicorn_argv(settings, args)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
