"""``python -m cronhive.api`` / ``cronhive api``: serve the app factory under gunicorn."""

from __future__ import annotations

import os
import sys

from cronhive.errors import ConfigurationError
from cronhive.metrics import prepare_multiprocess_dir
from cronhive.settings import Settings


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"cronhive api: {exc.message}", file=sys.stderr)
        sys.exit(2)
    # gunicorn runs several worker processes: aggregate their metrics
    prepare_multiprocess_dir("api")
    argv = [
        sys.executable, "-m", "gunicorn",
        "--config", "python:cronhive.api.gunicorn_conf",
        "--bind", f"{settings.api_host}:{settings.api_port}",
        "--workers", str(settings.api_workers),
        *sys.argv[1:],
        "cronhive.api:create_app()",
    ]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
