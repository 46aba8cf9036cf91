"""``cronhive apply`` and ``cronhive export``: schedules kept in a file (in git) and
applied declaratively through the REST API.

    cronhive apply -f FILE [--dry-run] [--prune --selector tag=NAME]
    cronhive export [--selector tag=NAME] [--output yaml|json]

The file is YAML or JSON: a list of jobs, each a mapping with ``job_id`` and any of
the fields of ``POST /jobs`` (``name``, ``schedule``, ``handler`` … ``tags``).
``apply`` reads every job of the API (pages of 100), then for each job of the
file: creates it when missing (``+ create ID``), or compares the fields the file
gives with the job as it is (``schedule`` compared in its normalized form) and
sends the ones that differ in one ``PUT`` with ``If-Match`` set to the ETag of
the job as read (``~ update ID field: old → new``, one line per field), so a
change made meanwhile by someone else is refused (412) rather than overwritten.
A field the file leaves out is left as it is. With ``--prune --selector
tag=NAME`` the jobs carrying that tag that the file does not list are deleted
(``- delete ID``, with ``If-Match`` too). Then one summary line, or ``no
changes``. ``--dry-run`` prints the same lines and changes nothing.

``export`` prints every job (or those of the selector) as a file ``apply``
accepts with no changes: the fields above, nulls left out, in a fixed order.

Connection options as for ``cronhive jobs`` (``--api-url``, ``--token``,
``--http-timeout``; before or after the command). Exit codes: 0 everything
applied (or nothing to do); 1 otherwise (a change the API refused — the others
are still applied — a file that cannot be read, the API unreachable); 2 a usage
error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cronhive.cli.jobs import (
    API_URL_ENV,
    ApiClient,
    ApiRefused,
    ApiUnreachable,
    add_connection_options,
    configured_api_url,
    quote,
)
from cronhive.settings import redact_url

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
PAGE = 100

#: The fields a file may give, in the order `export` writes them.
FIELDS = ("job_id", "name", "schedule", "timezone", "handler", "args", "enabled", "misfire_policy",
          "misfire_grace_s", "overlap_policy", "jitter_s", "timeout_s", "max_retries", "tags")
COMPARED = FIELDS[1:]


class FileRefused(Exception):
    """The file is not a list of jobs apply can use; the message says why."""


class HeaderClient(ApiClient):
    """`ApiClient` with what apply and export need: every job, a page at a time, and a
    job with its ETag (`ApiClient.exchange` answers the headers)."""

    def all_jobs(self, tag: str | None = None) -> list[dict[str, Any]]:
        """Every job (``tag``: those carrying it), in creation order, a page of 100 at a time."""
        jobs: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.call("GET", "/jobs", query={"page": page, "limit": PAGE, "tag": tag})
            jobs += body.get("data") or []
            total = (body.get("pagination") or {}).get("total", len(jobs))
            if not body.get("data") or len(jobs) >= total:
                return jobs
            page += 1

    def job_with_etag(self, job_id: str) -> tuple[dict[str, Any], str | None]:
        body, headers = self.exchange("GET", f"/jobs/{quote(job_id)}")
        return body, headers.get("etag")


# -- the file ----------------------------------------------------------------------


def load_file(path: str) -> list[dict[str, Any]]:
    """The jobs of a YAML or JSON file (``-``: standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileRefused(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        document = json.loads(text)
    except ValueError:
        import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FileRefused(f"{path} is neither JSON nor valid YAML: {exc}") from None
    return check_jobs(document, path)


def check_jobs(document: Any, path: str) -> list[dict[str, Any]]:
    if document is None:
        return []
    if not isinstance(document, list):
        raise FileRefused(f"{path}: expected a list of jobs, got a {type(document).__name__}")
    seen: set[str] = set()
    for index, entry in enumerate(document):
        where = f"{path}: job {index + 1}"
        if not isinstance(entry, dict):
            raise FileRefused(f"{where}: expected a mapping of fields, got a {type(entry).__name__}")
        job_id = entry.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise FileRefused(f"{where}: job_id is missing (every job of the file names its id)")
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            raise FileRefused(f"{where} ({job_id}): unknown field(s) {', '.join(unknown)}")
        if job_id in seen:
            raise FileRefused(f"{where}: job_id {job_id!r} appears twice")
        seen.add(job_id)
    return document


def normalized(name: str, value: Any) -> Any:
    """A file value as the API stores it (a schedule in its normalized form)."""
    if name == "schedule" and isinstance(value, str):
        from cronhive import cron
        from cronhive.errors import InvalidSchedule

        try:
            return cron.parse_schedule(value).expression
        except InvalidSchedule:
            return value  # the API says what is wrong with it
    return value


def differences(wanted: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (current, wanted)}`` for each field the file gives that differs."""
    changes = {}
    for name in COMPARED:
        if name in wanted:
            value = normalized(name, wanted[name])
            if value != current.get(name):
                changes[name] = (current.get(name), value)
    return changes


def exported(job: dict[str, Any]) -> dict[str, Any]:
    """A job view as an entry of the file (nulls left out)."""
    return {name: job[name] for name in FIELDS if job.get(name) is not None}


def shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- apply -------------------------------------------------------------------------


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        if not (self.created or self.updated or self.deleted or self.failed):
            return "no changes"
        verb = "would be " if dry_run else ""
        text = f"{self.created} {verb}created, {self.updated} {verb}updated, {self.deleted} {verb}deleted"
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + (" (dry run: nothing changed)" if dry_run else "")


def apply_jobs(client: HeaderClient, wanted: list[dict[str, Any]], *, dry_run: bool, prune_tag: str | None,
               out: TextIO, err: TextIO) -> Outcome:
    outcome = Outcome()
    existing = {job["job_id"]: job for job in client.all_jobs()}
    for entry in wanted:
        job_id = entry["job_id"]
        if job_id not in existing:
            out.write(f"+ create {job_id}\n")
            _change(outcome, "created", job_id, err, dry_run,
                    lambda entry=entry: client.call("POST", "/jobs", body=entry))
            continue
        if not differences(entry, existing[job_id]):
            continue
        _update(client, entry, outcome, dry_run, out, err)
    if prune_tag is not None:
        listed = {entry["job_id"] for entry in wanted}
        for job in client.all_jobs(prune_tag):
            if job["job_id"] in listed:
                continue
            job_id = job["job_id"]
            out.write(f"- delete {job_id}\n")
            _change(outcome, "deleted", job_id, err, dry_run, lambda job_id=job_id: _delete(client, job_id))
    return outcome


def _update(client: HeaderClient, entry: dict[str, Any], outcome: Outcome, dry_run: bool, out: TextIO,
            err: TextIO) -> None:
    """Diff against the job as read now, with its ETag, and send what differs with If-Match."""
    job_id = entry["job_id"]
    try:
        current, etag = client.job_with_etag(job_id)
    except ApiRefused as exc:
        _failed(outcome, job_id, exc, err)
        return
    changes = differences(entry, current)
    if not changes:
        return
    for name, (old, new) in changes.items():
        out.write(f"~ update {job_id} {name}: {shown(old)} → {shown(new)}\n")
    body = {name: new for name, (_, new) in changes.items()}
    _change(outcome, "updated", job_id, err, dry_run,
            lambda: client.update_job(job_id, body, if_match=etag))


def _delete(client: HeaderClient, job_id: str) -> Any:
    _, etag = client.job_with_etag(job_id)
    return client.delete_job(job_id, if_match=etag)


def _change(outcome: Outcome, counter: str, job_id: str, err: TextIO, dry_run: bool, send: Any) -> None:
    if not dry_run:
        try:
            send()
        except ApiRefused as exc:
            _failed(outcome, job_id, exc, err)
            return
    setattr(outcome, counter, getattr(outcome, counter) + 1)


def _failed(outcome: Outcome, job_id: str, exc: ApiRefused, err: TextIO) -> None:
    outcome.failed.append(job_id)
    err.write(f"cronhive: {job_id}: {exc.message} (HTTP {exc.status} {exc.code})\n")
    if isinstance(exc.details, dict):
        for name, problem in exc.details.items():
            err.write(f"  {name}: {problem}\n")


# -- parsing and entry points -------------------------------------------------------


def selector_tag(text: str) -> str:
    name, sep, value = text.partition("=")
    if sep != "=" or name.strip() != "tag" or not value.strip():
        raise argparse.ArgumentTypeError(f"selectors are tag=NAME, got {text!r}")
    return value.strip()


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "apply":
        parser = argparse.ArgumentParser(
            prog="cronhive apply", allow_abbrev=False,
            description="Create, update (and with --prune delete) jobs so the API holds what FILE lists.",
            epilog="Exit codes: 0 everything applied, 1 otherwise, 2 usage error.")
        parser.add_argument("-f", "--file", required=True, metavar="FILE",
                            help="YAML or JSON list of jobs, each with job_id (- reads standard input)")
        parser.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
        parser.add_argument("--prune", action="store_true",
                            help="delete the jobs of --selector that FILE does not list")
    else:
        parser = argparse.ArgumentParser(
            prog="cronhive export", allow_abbrev=False,
            description="Print the jobs as a file `cronhive apply` accepts with no changes.")
    parser.add_argument("--selector", type=selector_tag, metavar="tag=NAME",
                        help="only the jobs carrying this tag" if command == "export"
                        else "the jobs --prune may delete: those carrying this tag")
    add_connection_options(parser, top_level=True)
    return parser


def parse(command: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser(command)
    args = parser.parse_args(list(argv))
    if args.api_url is None:
        try:
            args.api_url = configured_api_url(os.environ)
        except ValueError as exc:
            parser.error(f"{exc} (or give --api-url / ${API_URL_ENV})")
    parts = urllib.parse.urlsplit(args.api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        parser.error(f"--api-url must be an http:// or https:// URL, got {args.api_url!r}")
    if command == "apply" and args.prune and args.selector is None:
        parser.error("--prune needs --selector tag=NAME (the jobs it may delete)")
    if command == "export" and args.output not in (None, "json"):
        parser.error("export prints YAML, or JSON with --output json")
    if not args.http_timeout > 0:
        parser.error("--http-timeout must be > 0")
    return args


def main(command: str, argv: list[str]) -> int:
    """``cronhive apply|export ARGV``; returns the exit code."""
    try:
        args = parse(command, argv)
    except SystemExit as exc:
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    client = HeaderClient(api_url=args.api_url, token=args.token or None, timeout_s=args.http_timeout)
    try:
        if command == "export":
            return export(client, args.selector, args.output == "json", sys.stdout)
        wanted = load_file(args.file)
        outcome = apply_jobs(client, wanted, dry_run=args.dry_run, prune_tag=args.selector if args.prune else None,
                             out=sys.stdout, err=sys.stderr)
        sys.stdout.write(outcome.summary(args.dry_run) + "\n")
        return EXIT_FAILED if outcome.failed else EXIT_OK
    except FileRefused as exc:
        sys.stderr.write(f"cronhive: {exc}\n")
        return EXIT_FAILED
    except ApiRefused as exc:
        sys.stderr.write(f"cronhive: {exc.message} (HTTP {exc.status} {exc.code})\n")
        return EXIT_FAILED
    except ApiUnreachable as exc:
        sys.stderr.write(f"cronhive: cannot reach the API at {redact_url(args.api_url)}: {exc.reason}\n")
        return EXIT_FAILED


def export(client: HeaderClient, tag: str | None, as_json: bool, out: TextIO) -> int:
    jobs = [exported(job) for job in client.all_jobs(tag)]
    if as_json:
        out.write(json.dumps(jobs, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    import yaml

    out.write(yaml.safe_dump(jobs, sort_keys=False, allow_unicode=True, default_flow_style=False) if jobs else "[]\n")
    return EXIT_OK
