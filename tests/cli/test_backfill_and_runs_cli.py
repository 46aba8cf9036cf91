"""``cronhive jobs backfill``, ``cronhive jobs runs --trigger``, bounded-schedule flags,
``cronhive runs list`` and ``cronhive runs cancel`` against a real running API
(gunicorn, MongoDB, RabbitMQ)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cronhive.cli.runs import main as runs_main
from tests.cli.conftest import CLIENT_ENV, CliResult, RunningApi, run_console_script
from tests.cli.test_jobs_cli import create, new_id, table_lines


@pytest.fixture
def runs_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run ``cronhive runs ARGS`` in this process, with no client variables from the test's environment."""
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = runs_main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def test_backfill_creates_the_slots_runs_and_runs_filters_them(cli, running_api: RunningApi) -> None:
    job_id = new_id("bf")
    create(cli, running_api, job_id, "--disabled", schedule="30 2 * * *")
    auth = ("--api-url", running_api.url, "--token", running_api.token)
    result = cli("backfill", job_id, "--start", "2026-03-27T00:00:00Z", "--end", "2026-03-31T00:00:00Z", *auth)
    assert result.code == 0, result.err
    body = result.json()
    assert (body["job_id"], body["slots"], body["created"]) == (job_id, 4, 4)
    again = cli("backfill", job_id, "--start", "2026-03-27T00:00:00Z", "--end", "2026-03-31T00:00:00Z",
                "--reprocess", "missing", *auth)
    assert again.code == 0 and again.json()["created"] == 0

    table = cli("runs", job_id, "--trigger", "backfill", "--api-url", running_api.url)
    assert table.code == 0, table.err
    lines = table_lines(table.out)
    assert [line[1] for line in lines[1:-1]] == ["backfill"] * 4
    assert cli("runs", job_id, "--trigger", "manual", "--api-url", running_api.url, "-o", "json").json()["data"] == []


def test_a_bad_backfill_prints_the_api_message_and_exits_1(cli, running_api: RunningApi) -> None:
    job_id = new_id("bf")
    create(cli, running_api, job_id)
    result = cli("backfill", job_id, "--start", "2026-03-27T00:00:00Z", "--end", "2026-03-26T00:00:00Z",
                 "--api-url", running_api.url, "--token", running_api.token)
    assert result.code == 1 and "HTTP 422 validation_error" in result.err and "end:" in result.err
    usage = cli("backfill", job_id, "--start", "2026-03-27T00:00:00Z", "--api-url", running_api.url)
    assert usage.code == 2 and "--end" in usage.err
    assert cli("backfill", job_id, "--start", "a", "--end", "b", "--reprocess", "some").code == 2


def test_bounded_schedule_flags(cli, running_api: RunningApi) -> None:
    job_id = new_id("bounded")
    result = create(cli, running_api, job_id, "--start-at", "2026-04-01T00:00:00Z", "--end-at",
                    "2026-05-01T00:00:00Z", "--max-fires", "3")
    body = result.json()
    assert (body["start_at"], body["end_at"], body["max_fires"], body["fires_left"]) == (
        "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", 3, 3)
    updated = cli("update", job_id, "--max-fires", "5", "--api-url", running_api.url, "--token", running_api.token)
    assert updated.code == 0 and updated.json()["fires_left"] == 5
    assert cli("update", job_id, "--max-fires", "0", "--api-url", running_api.url).code == 2


def test_runs_list_across_jobs_with_filters_and_cancel(cli, runs_cli, running_api: RunningApi) -> None:
    auth = ("--api-url", running_api.url, "--token", running_api.token)
    first, second = new_id("across"), new_id("across")
    create(cli, running_api, first)
    create(cli, running_api, second)
    run_a = cli("trigger", first, *auth).json()["run_id"]
    run_b = cli("trigger", second, *auth).json()["run_id"]

    table = runs_cli("list", "--status", "queued", "--api-url", running_api.url)
    assert table.code == 0, table.err
    lines = table_lines(table.out)
    assert lines[0][:4] == ["RUN_ID", "JOB_ID", "TRIGGER", "STATUS"]
    rows = {line[0]: line for line in lines[1:-1]}
    assert rows[run_a][1:4] == [first, "manual", "queued"] and rows[run_b][1] == second
    only = runs_cli("list", "--job-id", first, "-o", "json", "--api-url", running_api.url)
    assert [run["run_id"] for run in only.json()["data"]] == [run_a]

    cancelled = runs_cli("cancel", run_a, *auth)
    assert cancelled.code == 0, cancelled.err
    assert cancelled.json()["status"] == "cancelled"
    assert running_api.get(f"/runs/{run_a}")["status"] == "cancelled"
    assert [run["run_id"] for run in runs_cli("list", "--status", "cancelled", "--job-id", first, "-o", "json",
                                              "--api-url", running_api.url).json()["data"]] == [run_a]
    again = runs_cli("cancel", run_a, *auth)
    assert again.code == 1 and "HTTP 409 run_finished" in again.err
    assert runs_cli("cancel", "run_nope", *auth).code == 1
    unauthorized = runs_cli("cancel", run_b, "--api-url", running_api.url, "--token", "")
    assert unauthorized.code == 1 and "HTTP 401" in unauthorized.err


def test_runs_list_usage_errors_and_bad_values(runs_cli, running_api: RunningApi) -> None:
    assert runs_cli("list", "--status", "exploded", "--api-url", running_api.url).code == 2
    bad = runs_cli("list", "--since", "yesterday", "--api-url", running_api.url)
    assert bad.code == 1 and "HTTP 400 invalid_query" in bad.err and "since:" in bad.err
    assert runs_cli("--api-url", "ftp://x", "list").code == 2


def test_the_console_script_has_a_runs_command(running_api: RunningApi) -> None:
    result = run_console_script("runs", "list", "--api-url", running_api.url, "--limit", "1", "-o", "json")
    assert result.code == 0, result.err
    assert "pagination" in result.json()
    assert "runs" in run_console_script("--help").out
