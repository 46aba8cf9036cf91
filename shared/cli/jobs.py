"""``cronhive jobs ...``: operate on jobs through the REST API from a terminal.

    cronhive jobs list [--page N] [--limit N] [--status active|disabled] [--handler NAME]
    cronhive jobs get JOB_ID
    cronhive jobs create --name NAME --schedule CRON --handler NAME [policy flags]
    cronhive jobs update JOB_ID [--schedule CRON] [--disabled] [...] [--if-match REVISION]
    cronhive jobs delete JOB_ID [--if-match REVISION]
    cronhive jobs trigger JOB_ID
    cronhive jobs backfill JOB_ID --start INSTANT --end INSTANT [--reprocess missing|failed|all]
    cronhive jobs runs JOB_ID [--page N] [--limit N] [--trigger schedule|manual|backfill]
    cronhive jobs history JOB_ID [--page N] [--limit N]

(Runs across jobs, and cancelling one: ``cronhive runs``, `cronhive.cli.runs`.)

Standard library only (argparse, urllib, json), so it works wherever cronhive is
installed. It talks to ``--api-url``, else ``$CRONHIVE_API_URL``, else the API
this environment configures (``http://$API_HOST:$API_PORT``, a wildcard bind
address such as ``0.0.0.0`` connecting to the loopback; default
``http://127.0.0.1:8080``), waits ``--http-timeout`` seconds for an answer, and
sends ``--token`` (default ``$API_TOKEN``) as ``Authorization: Bearer``. These
options go before or after the command name. ``--output table`` is the default
of ``list``, ``runs`` and ``history``, ``--output json`` (the API's answer as is) of the others.
``update`` and ``delete`` send ``If-Match``: the job's ETag as read just before, or
``--if-match REVISION``, so a change made meanwhile is a 412, not overwritten.

Exit codes: 0 done; 1 the API refused (its error message is printed); 2 a usage
error, or the API could not be reached (one line naming the URL and the reason).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cronhive.settings import redact_url

API_BASE = "/api/v1/cron"
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8080
DEFAULT_API_URL = f"http://{DEFAULT_API_HOST}:{DEFAULT_API_PORT}"
API_URL_ENV = "CRONHIVE_API_URL"
TOKEN_ENV = "API_TOKEN"
DEFAULT_TIMEOUT_S = 10.0
#: bind addresses that mean "every interface": a client connects to the loopback instead
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1", "": DEFAULT_API_HOST}

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_USAGE = 2

#: Commands whose default output is a table (the others print the API's JSON).
TABLE_BY_DEFAULT = frozenset({"list", "runs", "history"})

NAME_WIDTH = 40


# -- talking to the API ---------------------------------------------------------


class ApiRefused(Exception):
    """The API answered with an error (4xx/5xx); carries its one error shape."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class ApiUnreachable(Exception):
    """No HTTP answer at all: refused connection, unknown host, timeout, TLS failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ApiClient:
    """A minimal JSON client of the cronhive REST API (canonical ``/api/v1/cron`` paths)."""

    api_url: str
    token: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        given = {key: value for key, value in (query or {}).items() if value is not None}
        suffix = f"?{urllib.parse.urlencode(given)}" if given else ""
        return f"{self.api_url.rstrip('/')}{API_BASE}{path}{suffix}"

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
             headers: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON answer; `ApiRefused` for an error status, `ApiUnreachable` for no answer."""
        return self.exchange(method, path, query=query, body=body, headers=headers)[0]

    def exchange(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                 headers: Mapping[str, str] | None = None) -> tuple[Any, dict[str, str]]:
        """The decoded JSON answer and the response's headers (names lower-cased)."""
        sent = {"Accept": "application/json", "User-Agent": "cronhive-cli", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url(path, query), data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                received = {name.lower(): value for name, value in response.headers.items()}
                return decode_json(response.read()), received
        except urllib.error.HTTPError as exc:
            with exc:
                raise refusal(exc.code, exc.reason, exc.read()) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise ApiUnreachable(describe_failure(exc, self.timeout_s)) from None

    # one method per endpoint
    def list_jobs(self, page: int | None, limit: int | None, status: str | None, handler: str | None) -> Any:
        return self.call("GET", "/jobs", query={"page": page, "limit": limit, "status": status, "handler": handler})

    def get_job(self, job_id: str) -> Any:
        return self.call("GET", f"/jobs/{quote(job_id)}")

    def job_etag(self, job_id: str) -> str | None:
        """The job's current ``ETag`` (its revision, ``"7"``)."""
        return self.exchange("GET", f"/jobs/{quote(job_id)}")[1].get("etag")

    def create_job(self, fields: dict[str, Any]) -> Any:
        return self.call("POST", "/jobs", body=fields)

    def update_job(self, job_id: str, changes: dict[str, Any], if_match: str | None = None) -> Any:
        """``PUT``; with ``if_match`` (an ETag) only while the job is still at that revision (412 otherwise)."""
        return self.call("PUT", f"/jobs/{quote(job_id)}", body=changes, headers=if_match_header(if_match))

    def delete_job(self, job_id: str, if_match: str | None = None) -> Any:
        return self.call("DELETE", f"/jobs/{quote(job_id)}", headers=if_match_header(if_match))

    def trigger_job(self, job_id: str) -> Any:
        return self.call("POST", f"/jobs/{quote(job_id)}/trigger")

    def list_runs(self, job_id: str, page: int | None, limit: int | None, trigger: str | None = None) -> Any:
        return self.call("GET", f"/jobs/{quote(job_id)}/runs", query={"page": page, "limit": limit, "trigger": trigger})

    def backfill_job(self, job_id: str, start: str, end: str, reprocess: str | None) -> Any:
        body = {"start": start, "end": end, **({"reprocess": reprocess} if reprocess else {})}
        return self.call("POST", f"/jobs/{quote(job_id)}/backfill", body=body)

    def search_runs(self, query: dict[str, Any]) -> Any:
        return self.call("GET", "/runs", query=query)

    def cancel_run(self, run_id: str) -> Any:
        return self.call("POST", f"/runs/{quote(run_id)}/cancel")

    def list_revisions(self, job_id: str, page: int | None, limit: int | None) -> Any:
        return self.call("GET", f"/jobs/{quote(job_id)}/revisions", query={"page": page, "limit": limit})


def if_match_header(etag: str | None) -> dict[str, str]:
    return {"If-Match": etag} if etag else {}


def as_etag(revision: str) -> str:
    """``--if-match``: a revision number (``7``) or an ETag as the API sends it (``"7"``)."""
    return f'"{revision}"' if revision.isdigit() else revision


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ApiUnreachable("the answer is not JSON (is --api-url a cronhive API?)") from None


def refusal(status: int, reason: str, raw: bytes) -> ApiRefused:
    """The API's ``{"error": {code, message, details}}``, or the bare HTTP status from a proxy."""
    try:
        error = json.loads(raw)["error"]
        return ApiRefused(status, str(error.get("code", "error")), str(error.get("message", reason)), error.get("details"))
    except (ValueError, KeyError, TypeError, AttributeError):
        text = raw.decode("utf-8", "replace").strip().splitlines()
        hint = f": {text[0][:200]}" if text else ""
        return ApiRefused(status, "http_error", f"HTTP {status} {reason}{hint}")


def describe_failure(exc: BaseException, timeout_s: float) -> str:
    """One human reason for a failed connection (``Connection refused``, ``timed out``...)."""
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- output ---------------------------------------------------------------------


Column = tuple[str, Callable[[dict[str, Any]], Any]]

JOB_COLUMNS: list[Column] = [
    ("JOB_ID", lambda job: job.get("job_id")),
    ("NAME", lambda job: shorten(job.get("name"), NAME_WIDTH)),
    ("SCHEDULE", lambda job: job.get("schedule")),
    ("TIMEZONE", lambda job: job.get("timezone")),
    ("HANDLER", lambda job: job.get("handler")),
    ("STATUS", lambda job: job.get("status")),
    ("INVALID_REASON", lambda job: shorten(job.get("invalid_reason"), 60)),
    ("NEXT_TRIGGER_AT", lambda job: job.get("next_trigger_at")),
    ("LAST_RUN", lambda job: job.get("last_run_status")),
    ("LAST_MS", lambda job: job.get("last_run_duration_ms")),
]

RUN_COLUMNS: list[Column] = [
    ("RUN_ID", lambda run: run.get("run_id")),
    ("TRIGGER", lambda run: run.get("trigger")),
    ("STATUS", lambda run: run.get("status")),
    ("ATTEMPT", lambda run: run.get("attempt")),
    ("SCHEDULED_FOR", lambda run: run.get("scheduled_for")),
    ("STARTED_AT", lambda run: run.get("started_at")),
    ("DURATION_MS", lambda run: run.get("duration_ms")),
    ("WORKER", lambda run: run.get("worker")),
    ("ERROR", lambda run: error_text(run.get("error"))),
    ("OUTPUT", lambda run: output_text(run.get("output"), run.get("output_truncated"))),
]


def changes_text(changes: Any) -> str:
    """A revision's ``changes`` as ``field: old → new`` items (JSON values), ``;``-separated."""
    if not isinstance(changes, dict) or not changes:
        return "-"
    items = []
    for name, pair in changes.items():
        old, new = pair if isinstance(pair, list) and len(pair) == 2 else (None, pair)
        items.append(f"{name}: {change_value(old)} → {change_value(new)}")
    return "; ".join(items)


def change_value(value: Any) -> str:
    return shorten(json.dumps(value, ensure_ascii=False, separators=(",", ":")), 60)  # type: ignore[no-any-return]


REVISION_COLUMNS: list[Column] = [
    ("REVISION", lambda revision: revision.get("revision")),
    ("AT", lambda revision: revision.get("at")),
    ("ACTOR", lambda revision: revision.get("actor")),
    ("ACTION", lambda revision: revision.get("action")),
    ("CHANGES", lambda revision: changes_text(revision.get("changes"))),
]


def shorten(text: Any, width: int) -> Any:
    if isinstance(text, str) and len(text) > width:
        return text[: width - 1] + "…"
    return text


def error_text(error: Any) -> Any:
    if isinstance(error, dict):
        return shorten(f"{error.get('type', 'error')}: {error.get('message', '')}", 60)
    return error


def output_text(output: Any, truncated: Any = False) -> Any:
    """A run's ``output`` in one table cell: compact JSON, cut to 60 characters."""
    if output is None:
        return None
    text = output if isinstance(output, str) else json.dumps(output, separators=(",", ":"), ensure_ascii=False)
    return shorten(text + (" (truncated)" if truncated else ""), 60)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    cells = [[header for header, _ in columns]] + [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells)


def render_record(record: dict[str, Any]) -> str:
    """One object as ``key  value`` lines (the table view of get, create, update, trigger)."""
    width = max((len(key) for key in record), default=0)
    return "\n".join(f"{key.ljust(width)}  {cell(value)}" for key, value in record.items())


def render_page(body: dict[str, Any], columns: Sequence[Column], noun: str) -> str:
    rows = body.get("data") or []
    pagination = body.get("pagination") or {}
    page, limit, total = pagination.get("page", 1), pagination.get("limit") or 1, pagination.get("total", len(rows))
    pages = max(1, math.ceil(total / limit))
    footer = f"page {page} of {pages} ({total} {noun}{'' if total == 1 else 's'} in all)"
    if not rows:
        return f"no {noun}s on this page\n{footer}"
    return f"{render_table(rows, columns)}\n{footer}"


def emit(body: Any, output: str, table: Callable[[Any], str], out: TextIO) -> None:
    if output == "json":
        out.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(table(body) + "\n")


# -- commands -------------------------------------------------------------------


#: create/update flag -> API field.
JOB_FIELDS = {
    "name": "name",
    "schedule": "schedule",
    "handler": "handler",
    "timezone": "timezone",
    "args": "args",
    "enabled": "enabled",
    "misfire_policy": "misfire_policy",
    "misfire_grace_s": "misfire_grace_s",
    "overlap_policy": "overlap_policy",
    "jitter_s": "jitter_s",
    "timeout_s": "timeout_s",
    "max_retries": "max_retries",
    "start_at": "start_at",
    "end_at": "end_at",
    "max_fires": "max_fires",
}


def job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job fields given on the command line (absent flags are not sent).
    ``job_id`` is a field on create only; on update it names the job in the path."""
    fields = {field: getattr(args, flag) for flag, field in JOB_FIELDS.items() if getattr(args, flag, None) is not None}
    if args.command == "create" and args.job_id is not None:
        fields["job_id"] = args.job_id
    return fields


def run_command(args: argparse.Namespace, client: ApiClient, out: TextIO) -> None:
    command = args.command
    output = args.output or ("table" if command in TABLE_BY_DEFAULT else "json")
    if command == "list":
        body = client.list_jobs(args.page, args.limit, args.status, args.handler)
        emit(body, output, lambda b: render_page(b, JOB_COLUMNS, "job"), out)
    elif command == "runs":
        body = client.list_runs(args.job_id, args.page, args.limit, args.trigger)
        emit(body, output, lambda b: render_page(b, RUN_COLUMNS, "run"), out)
    elif command == "history":
        body = client.list_revisions(args.job_id, args.page, args.limit)
        emit(body, output, lambda b: render_page(b, REVISION_COLUMNS, "revision"), out)
    elif command == "get":
        emit(client.get_job(args.job_id), output, render_record, out)
    elif command == "create":
        emit(client.create_job(job_fields(args)), output, render_record, out)
    elif command == "update":
        etag = as_etag(args.if_match) if args.if_match else client.job_etag(args.job_id)
        emit(client.update_job(args.job_id, job_fields(args), etag), output, render_record, out)
    elif command == "delete":
        etag = as_etag(args.if_match) if args.if_match else client.job_etag(args.job_id)
        emit(client.delete_job(args.job_id, etag), output, render_record, out)
    elif command == "trigger":
        emit(client.trigger_job(args.job_id), output, render_record, out)
    elif command == "backfill":
        emit(client.backfill_job(args.job_id, args.start, args.end, args.reprocess), output, render_record, out)
    else:  # argparse only lets known commands through
        raise AssertionError(command)


# -- argument parsing -----------------------------------------------------------


def json_object(text: str) -> dict[str, Any]:
    """``--args``: a JSON object, inline or ``@file.json``."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"seconds\": 5}'")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def configured_api_url(env: Mapping[str, str]) -> str:
    """The API this environment points at: ``$CRONHIVE_API_URL``, else the address the
    API of this environment binds (``API_HOST``, ``API_PORT``), a wildcard bind
    address (``0.0.0.0``, ``::``) replaced by the loopback one can connect to.

    Raises `ValueError` naming the variable when ``API_PORT`` is not a port."""
    if env.get(API_URL_ENV):
        return env[API_URL_ENV]
    host = env.get("API_HOST", DEFAULT_API_HOST).strip()
    host = WILDCARD_HOSTS.get(host, host)
    port_text = env.get("API_PORT", "").strip() or str(DEFAULT_API_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"API_PORT must be a port number, got {port_text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"API_PORT must be a port number, got {port_text!r}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


def add_connection_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """The options every command takes, before or after the command name.

    On the subcommands their default is SUPPRESS, so a value given after the
    command overrides the top level's and an absent one leaves it alone. The
    top level's ``--api-url`` default is None: `parse` resolves it from the
    environment (`configured_api_url`) only when no URL is given."""
    env = os.environ
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--api-url", default=default(None), metavar="URL",
                        help=f"the cronhive API (default: ${API_URL_ENV}, else http://$API_HOST:$API_PORT "
                             f"with 0.0.0.0 read as 127.0.0.1, else {DEFAULT_API_URL})")
    parser.add_argument("--token", default=default(env.get(TOKEN_ENV) or None),
                        help=f"bearer token for mutating calls (default: ${TOKEN_ENV})")
    parser.add_argument("--output", "-o", choices=("json", "table"), default=default(None),
                        help="output format (default: table for list and runs, json otherwise)")
    parser.add_argument("--http-timeout", type=float, default=default(DEFAULT_TIMEOUT_S), metavar="SECONDS",
                        help=f"seconds to wait for the API to answer (default: {DEFAULT_TIMEOUT_S:g}; "
                             "not the job's --timeout-s)")


def add_job_flags(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument("--name", required=create, help="display name (1-200 characters)")
    parser.add_argument("--schedule", required=create, metavar="CRON",
                        help="cron expression: 5 fields, 6 with seconds first, or @daily-style macros")
    parser.add_argument("--handler", required=create, help="registered handler name (GET /handlers lists them)")
    parser.add_argument("--timezone", metavar="TZ", help="IANA time zone (default UTC)")
    parser.add_argument("--args", type=json_object, metavar="JSON",
                        help="JSON object handed to the handler, inline or @file.json")
    enabled = parser.add_mutually_exclusive_group()
    enabled.add_argument("--enabled", dest="enabled", action="store_const", const=True, default=None,
                         help="the job fires on its schedule (the default on create)")
    enabled.add_argument("--disabled", dest="enabled", action="store_const", const=False,
                         help="the job is paused (manual triggers still run it)")
    parser.add_argument("--misfire-policy", choices=("fire_once", "skip", "fire_all"),
                        help="what missed slots do (default fire_once)")
    parser.add_argument("--misfire-grace-s", type=non_negative_int, metavar="SECONDS",
                        help="how late a missed slot may still run under fire_once (default 60)")
    parser.add_argument("--overlap-policy", choices=("forbid", "allow", "buffer_one"),
                        help="a slot while a run holds the job's lease (default forbid)")
    parser.add_argument("--jitter-s", type=non_negative_int, metavar="SECONDS",
                        help="spread fires by a fixed per-job offset in [0, N) seconds")
    parser.add_argument("--timeout-s", type=positive_int, metavar="SECONDS",
                        help="per-run time limit; past it the run is timed_out")
    parser.add_argument("--max-retries", type=non_negative_int, metavar="N",
                        help="retries of a failed run, with exponential backoff")
    parser.add_argument("--start-at", metavar="INSTANT", help="no scheduled slot before this ISO-8601 instant")
    parser.add_argument("--end-at", metavar="INSTANT", help="no scheduled slot at or after this ISO-8601 instant")
    parser.add_argument("--max-fires", type=positive_int, metavar="N",
                        help="at most N scheduled runs fire; then the job is completed")
    if create:
        parser.add_argument("--job-id", help="the id ([a-z0-9][a-z0-9_-]{0,63}); generated from the name when absent")


def add_if_match_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--if-match", metavar="REVISION",
                        help="change the job only while it is at this revision (its ETag, e.g. 7; "
                             "default: the revision read just before); 412 if it changed")


def add_paging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page", type=positive_int, help="page number (default 1)")
    parser.add_argument("--limit", type=positive_int, help="items per page, 1-100 (default 20)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cronhive jobs",
        allow_abbrev=False,  # no prefix matching: --timeout must never mean --timeout-s
        description="Operate on cronhive jobs through the REST API.",
        epilog="Exit codes: 0 done, 1 the API refused (its message is printed), "
               "2 usage error or the API is unreachable.",
    )
    add_connection_options(parser, top_level=True)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_connection_options(common, top_level=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", parents=[common], allow_abbrev=False, help="list jobs (table)")
    add_paging_flags(listing)
    listing.add_argument("--status", choices=("active", "disabled"), help="only jobs with this status")
    listing.add_argument("--handler", help="only jobs running this handler")

    get = commands.add_parser("get", parents=[common], allow_abbrev=False, help="show one job (JSON)")
    get.add_argument("job_id", metavar="JOB_ID")

    create = commands.add_parser("create", parents=[common], allow_abbrev=False, help="register a job")
    add_job_flags(create, create=True)

    update = commands.add_parser("update", parents=[common], allow_abbrev=False, help="change some fields of a job")
    update.add_argument("job_id", metavar="JOB_ID")
    add_job_flags(update, create=False)
    add_if_match_flag(update)

    delete = commands.add_parser("delete", parents=[common], allow_abbrev=False, help="delete a job")
    delete.add_argument("job_id", metavar="JOB_ID")
    add_if_match_flag(delete)

    trigger = commands.add_parser("trigger", parents=[common], allow_abbrev=False, help="run a job now (works on disabled jobs too)")
    trigger.add_argument("job_id", metavar="JOB_ID")

    backfill = commands.add_parser("backfill", parents=[common], allow_abbrev=False,
                                   help="run a job's past slots of [--start, --end) again, oldest first")
    backfill.add_argument("job_id", metavar="JOB_ID")
    backfill.add_argument("--start", required=True, metavar="INSTANT", help="first instant of the range (inclusive)")
    backfill.add_argument("--end", required=True, metavar="INSTANT", help="end of the range (exclusive)")
    backfill.add_argument("--reprocess", choices=("missing", "failed", "all"),
                          help="which slots: with no succeeded run (default), whose run failed, or all")

    runs = commands.add_parser("runs", parents=[common], allow_abbrev=False, help="a job's run history, newest first (table)")
    runs.add_argument("job_id", metavar="JOB_ID")
    add_paging_flags(runs)
    runs.add_argument("--trigger", choices=("schedule", "manual", "backfill"), help="only runs of this trigger")

    history = commands.add_parser("history", parents=[common], allow_abbrev=False,
                                  help="who changed a job, when and how: its revisions, newest first (table)")
    history.add_argument("job_id", metavar="JOB_ID")
    add_paging_flags(history)
    return parser


def parse(argv: Sequence[str], env: Mapping[str, str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    check_connection(parser, args, env)
    if args.command == "update" and not job_fields(args):
        parser.error("update: give at least one field to change (e.g. --schedule or --disabled)")
    return args


def check_connection(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     env: Mapping[str, str] | None) -> None:
    """Resolve ``--api-url`` from the environment when absent, and refuse a URL that is
    not http(s) or a timeout that is not positive (a usage error, exit 2)."""
    if args.api_url is None:
        try:
            args.api_url = configured_api_url(os.environ if env is None else env)
        except ValueError as exc:
            parser.error(f"{exc} (or give --api-url / ${API_URL_ENV})")
    parts = urllib.parse.urlsplit(args.api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        parser.error(f"--api-url must be an http:// or https:// URL, got {args.api_url!r}")
    if not args.http_timeout > 0:
        parser.error("--http-timeout must be > 0")


# -- entry point ----------------------------------------------------------------


def print_refusal(exc: ApiRefused, err: TextIO) -> None:
    err.write(f"cronhive: {exc.message} (HTTP {exc.status} {exc.code})\n")
    for line in detail_lines(exc.details):
        err.write(f"  {line}\n")
    if exc.status == 401:
        err.write(f"  pass --token or set {TOKEN_ENV}\n")
    if exc.status == 412:
        err.write("  the job changed since its revision was read (see `cronhive jobs history JOB_ID`); read it again and retry\n")


def detail_lines(details: Any, prefix: str = "") -> list[str]:
    """``field: message`` lines from the error's ``details`` (nested for nested fields)."""
    if isinstance(details, dict):
        lines = []
        for key, value in details.items():
            lines += detail_lines(value, f"{prefix}{key}.")
        return lines
    if isinstance(details, list) and all(not isinstance(item, (dict, list)) for item in details):
        return [f"{prefix.rstrip('.')}: {'; '.join(str(item) for item in details)}"] if details else []
    if isinstance(details, list):
        return [line for index, item in enumerate(details) for line in detail_lines(item, f"{prefix}{index}.")]
    return [f"{prefix.rstrip('.')}: {details}"] if prefix else [str(details)]


def main(argv: list[str]) -> int:
    """``cronhive jobs ARGV``; returns the exit code (never raises for API or network trouble)."""
    return execute(argv, parse, run_command)


def execute(argv: list[str], parse_args: Callable[[Sequence[str]], argparse.Namespace],
            command: Callable[[argparse.Namespace, ApiClient, TextIO], None]) -> int:
    """Parse ``argv`` and run ``command`` against the API; the exit code (`EXIT_OK`,
    `EXIT_API_ERROR`, `EXIT_UNREACHABLE`/`EXIT_USAGE`), never raising for API trouble."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    client = ApiClient(api_url=args.api_url, token=args.token or None, timeout_s=args.http_timeout)
    try:
        command(args, client, sys.stdout)
        sys.stdout.flush()
    except ApiRefused as exc:
        print_refusal(exc, sys.stderr)
        return EXIT_API_ERROR
    except ApiUnreachable as exc:
        sys.stderr.write(f"cronhive: cannot reach the API at {redact_url(args.api_url)}: {exc.reason}\n")
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # `cronhive jobs list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return EXIT_OK
