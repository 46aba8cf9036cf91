"""The ``cronhive`` command: one entry point for every process.

``cronhive api|scheduler|worker`` replace themselves with the process they name
(``python -m cronhive.api`` …), so the CLI imports none of them; ``cronhive up`` runs the
local cluster (`cronhive.cli.up`), ``cronhive jobs`` and ``cronhive runs`` talk to the API
(`cronhive.cli.jobs`, `cronhive.cli.runs`).

``--help`` (or ``-h``) of every command prints its help and starts nothing:
``api`` and ``worker`` answer it themselves (before reading any setting),
``scheduler`` takes no arguments, so its help is printed here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from cronhive.settings import VARIABLES

PROCESSES = {"api": "cronhive.api", "scheduler": "cronhive.scheduler", "worker": "cronhive.worker"}
HELP_FLAGS = frozenset({"-h", "--help"})

USAGE = """usage: cronhive COMMAND [ARGS...]

commands:
  up          the local cluster: embedded MongoDB (when MONGODB_URI is unset), API, schedulers, workers
  api         the REST API under gunicorn on API_HOST:API_PORT
  scheduler   a scheduler process (run 2+; one is leader)
  worker      a Dramatiq worker on the runs queue (--processes N --threads N)
  jobs        operate on jobs through the API (cronhive jobs --help)
  runs        runs across jobs, and cancelling one, through the API (cronhive runs --help)

`cronhive COMMAND --help` describes each command; every process is configured
by environment variables (README, Configuration).
"""

SCHEDULER_VARIABLES = ("MONGODB_URI", "MONGODB_DB", "MONGODB_TIMEOUT_MS", "RABBITMQ_URL", "RUNS_QUEUE",
                       "LEADER_LEASE_S", "JOB_LEASE_S", "SCHEDULER_BATCH", "SCHEDULER_MAX_SLEEP_MS", "LOG_LEVEL",
                       "METRICS_HOST", "METRICS_PORT")

SCHEDULER_HELP = """usage: cronhive scheduler

A scheduler process: it competes for the leader lease in MongoDB; the leader
plans each due slot of every enabled job as one run record and publishes it on
the runs queue, the others stand by and take over within a lease when the
leader stops. Run two or more. SIGTERM or SIGINT stops it (the leader hands the
lease over at once). It takes no arguments.

options:
  -h, --help  show this help and exit
"""


def wants_help(args: Sequence[str]) -> bool:
    """``-h`` / ``--help`` among the arguments (before a ``--``, after which they are operands)."""
    for arg in args:
        if arg == "--":
            return False
        if arg in HELP_FLAGS:
            return True
    return False


def environment_help(names: Sequence[str]) -> str:
    """The ``environment:`` section of a process's help: each variable, its default and meaning."""
    width = max(len(name) for name in names)
    lines = ["environment (default in brackets):"]
    for name in names:
        _, default, text = VARIABLES[name]
        lines.append(f"  {name.ljust(width)}  {text.replace('`', '')} [{default}]")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in HELP_FLAGS or args[0] == "help":
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "scheduler":
        if wants_help(rest):
            print(SCHEDULER_HELP + "\n" + environment_help(SCHEDULER_VARIABLES), end="")
            return 0
        if rest:
            print(f"cronhive scheduler: takes no arguments, got {' '.join(rest)!r}\n\n{SCHEDULER_HELP}",
                  file=sys.stderr, end="")
            return 2
    if command in PROCESSES:
        os.execv(sys.executable, [sys.executable, "-m", PROCESSES[command], *rest])
    if command == "up":
        from cronhive.cli.up import main as up

        return up(rest)
    if command == "jobs":
        from cronhive.cli.jobs import main as jobs

        return jobs(rest)
    if command == "runs":
        from cronhive.cli.runs import main as runs

        return runs(rest)
    print(f"cronhive: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
