"""``cronhive runs ...``: runs across jobs through the REST API.

    cronhive runs list [--status S] [--trigger T] [--job-id ID] [--since INSTANT] [--until INSTANT]
                       [--page N] [--limit N]
    cronhive runs cancel RUN_ID

``list`` is ``GET /api/v1/cron/runs`` (newest first; "what failed last night":
``cronhive runs list --status failed --since 2026-03-25T18:00:00Z``), a table by
default; ``cancel`` is ``POST /runs/RUN_ID/cancel`` (a run not started is
cancelled at once, a running one is asked to stop), JSON by default. The
connection options (``--api-url``, ``--token``, ``--output``, ``--http-timeout``)
and exit codes are those of ``cronhive jobs`` (`cronhive.cli.jobs`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TextIO

from cronhive.cli.jobs import (
    RUN_COLUMNS,
    ApiClient,
    Column,
    add_connection_options,
    add_paging_flags,
    check_connection,
    emit,
    execute,
    render_page,
    render_record,
)
from cronhive.domain import RUN_STATUSES, TRIGGERS

#: A run of any job: its job first.
ACROSS_COLUMNS: list[Column] = [RUN_COLUMNS[0], ("JOB_ID", lambda run: run.get("job_id")), *RUN_COLUMNS[1:]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cronhive runs",
        allow_abbrev=False,
        description="Runs across cronhive jobs, through the REST API.",
        epilog="Exit codes: 0 done, 1 the API refused (its message is printed), "
               "2 usage error or the API is unreachable.",
    )
    add_connection_options(parser, top_level=True)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_connection_options(common, top_level=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", parents=[common], allow_abbrev=False,
                                  help="runs of every job, newest first (table)")
    add_paging_flags(listing)
    listing.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
    listing.add_argument("--trigger", choices=TRIGGERS, help="only runs of this trigger")
    listing.add_argument("--job-id", help="only runs of this job")
    listing.add_argument("--since", metavar="INSTANT", help="runs created at or after this ISO-8601 instant")
    listing.add_argument("--until", metavar="INSTANT", help="runs created before this ISO-8601 instant")

    cancel = commands.add_parser("cancel", parents=[common], allow_abbrev=False,
                                 help="cancel a run (not started: cancelled; running: asked to stop)")
    cancel.add_argument("run_id", metavar="RUN_ID")
    return parser


def parse(argv: Sequence[str], env: Mapping[str, str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    check_connection(parser, args, env)
    return args


def run_command(args: argparse.Namespace, client: ApiClient, out: TextIO) -> None:
    if args.command == "list":
        query = {"page": args.page, "limit": args.limit, "status": args.status, "trigger": args.trigger,
                 "job_id": args.job_id, "since": args.since, "until": args.until}
        emit(client.search_runs(query), args.output or "table", lambda b: render_page(b, ACROSS_COLUMNS, "run"), out)
    elif args.command == "cancel":
        emit(client.cancel_run(args.run_id), args.output or "json", render_record, out)
    else:  # argparse only lets known commands through
        raise AssertionError(args.command)


def main(argv: list[str]) -> int:
    """``cronhive runs ARGV``; returns the exit code (never raises for API or network trouble)."""
    return execute(argv, parse, run_command)
