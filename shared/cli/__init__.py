"""The ``cronhive`` command: one entry point for every process.

``cronhive api|scheduler|worker`` replace themselves with the process they name
(``python -m cronhive.api`` …), so the CLI imports none of them; ``cronhive up`` runs the
local cluster (`cronhive.cli.up`), ``cronhive jobs`` and ``cronhive runs`` talk to the API
(`cronhive.cli.jobs`, `cronhive.cli.runs`), ``cronhive apply`` / ``cronhive export`` keep jobs
in a file (`cronhive.cli.apply`).

``--help`` (or ``-h``) of every command prints its help and starts nothing: the
processes answer it themselves, before reading any setting (so ``python -m
cronhive.scheduler --help`` does too).
"""

from __future__ import annotations

import os
import sys

PROCESSES = {"api": "cronhive.api", "scheduler": "cronhive.scheduler", "worker": "cronhive.worker"}
HELP_FLAGS = frozenset({"-h", "--help"})

USAGE = """usage: cronhive COMMAND [ARGS...]

commands:
  up          the local cluster: embedded MongoDB (when MONGODB_URI is unset), API, schedulers, workers
  api         the REST API under gunicorn on API_HOST:API_PORT
  scheduler   a scheduler process (run 2+; one is leader)
  worker      a Dramatiq worker on the runs queue (--processes N --threads N)
  jobs        operate on jobs through the API (cronhive jobs --help)
  apply       make the API hold the jobs a YAML/JSON file lists (cronhive apply --help)
  export      print the jobs as a file apply accepts (cronhive export --help)
  runs        runs across jobs, and cancelling one, through the API (cronhive runs --help)

`cronhive COMMAND --help` describes each command; every process is configured
by environment variables (README, Configuration).
"""

def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in HELP_FLAGS or args[0] == "help":
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in PROCESSES:
        os.execv(sys.executable, [sys.executable, "-m", PROCESSES[command], *rest])
    if command == "up":
        from cronhive.cli.up import main as up

        return up(rest)
    if command == "jobs":
        from cronhive.cli.jobs import main as jobs

        return jobs(rest)
    if command in ("apply", "export"):
        from cronhive.cli.apply import main as apply

        return apply(command, rest)
    if command == "runs":
        from cronhive.cli.runs import main as runs

        return runs(rest)
    print(f"cronhive: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
