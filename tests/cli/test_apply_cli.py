"""``cronhive apply`` and ``cronhive export`` against a real running API (gunicorn,
MongoDB, RabbitMQ): create what is missing, update what differs (with If-Match),
prune by tag, dry runs that change nothing, the export/apply round trip, and
refusals that leave the rest applied.

The tests share one API process: every test's jobs carry a tag of its own, and
``--selector`` / ``--prune`` only ever touch that tag."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cronhive.cli.apply import HeaderClient, apply_jobs
from cronhive.cli.apply import main as apply_main
from tests.cli.conftest import CLIENT_ENV, CliResult, RunningApi, run_console_script

Cli = Callable[..., CliResult]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``cronhive apply|export ARGS`` in this process, no client settings from the environment."""
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)

    def call(command: str, *argv: str) -> CliResult:
        capsys.readouterr()
        code = apply_main(command, list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


@pytest.fixture
def tag() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def fleet(tag: str) -> list[dict[str, Any]]:
    return [
        {"job_id": f"{tag}-report", "name": "Nightly report", "schedule": "0 3 * * *", "handler": "noop",
         "timezone": "Europe/Berlin", "tags": [tag, "reports"], "args": {"to": ["ops@example.com"]}},
        {"job_id": f"{tag}-sync", "name": "Sync", "schedule": "*/5 * * * *", "handler": "noop", "tags": [tag],
         "misfire_policy": "skip", "overlap_policy": "buffer_one", "max_retries": 2},
        {"job_id": f"{tag}-cleanup", "name": "Cleanup", "schedule": "0  0 * * *", "handler": "noop", "tags": [tag],
         "enabled": False},
    ]


def write(path: Path, jobs: list[dict[str, Any]], as_json: bool = False) -> str:
    path.write_text(json.dumps(jobs) if as_json else yaml.safe_dump(jobs, sort_keys=False))
    return str(path)


def connect(api: RunningApi) -> tuple[str, ...]:
    return ("--api-url", api.url, "--token", api.token)


def exported(run: Cli, api: RunningApi, tag: str) -> list[dict[str, Any]]:
    result = run("export", "--selector", f"tag={tag}", *connect(api))
    assert result.code == 0, result.err
    return yaml.safe_load(result.out)


def test_apply_creates_then_finds_no_changes_and_export_round_trips(run: Cli, running_api: RunningApi, tag: str,
                                                                     tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", fleet(tag))
    first = run("apply", "-f", path, *connect(running_api))
    assert first.code == 0, first.err
    assert first.out.splitlines() == [f"+ create {tag}-report", f"+ create {tag}-sync", f"+ create {tag}-cleanup",
                                      "3 created, 0 updated, 0 deleted"]
    job = running_api.get(f"/jobs/{tag}-sync")
    assert (job["misfire_policy"], job["overlap_policy"], job["max_retries"]) == ("skip", "buffer_one", 2)
    assert running_api.get(f"/jobs/{tag}-cleanup")["schedule"] == "0 0 * * *"  # as the API stores it
    again = run("apply", "-f", path, *connect(running_api))
    assert (again.code, again.out) == (0, "no changes\n")  # the schedule compared in its normalized form

    exported_jobs = exported(run, running_api, tag)
    assert [job["job_id"] for job in exported_jobs] == [f"{tag}-report", f"{tag}-sync", f"{tag}-cleanup"]
    assert exported_jobs[0] == {"job_id": f"{tag}-report", "name": "Nightly report", "schedule": "0 3 * * *",
                                "timezone": "Europe/Berlin", "handler": "noop", "args": {"to": ["ops@example.com"]},
                                "enabled": True, "misfire_policy": "fire_once", "misfire_grace_s": 60,
                                "overlap_policy": "forbid", "jitter_s": 0, "timeout_s": 3600, "max_retries": 0,
                                "tags": [tag, "reports"]}
    round_trip = tmp_path / "exported.yaml"
    round_trip.write_text(run("export", "--selector", f"tag={tag}", *connect(running_api)).out)
    for extra in ((), ("--prune", "--selector", f"tag={tag}")):
        same = run("apply", "-f", str(round_trip), *extra, *connect(running_api))
        assert (same.code, same.out) == (0, "no changes\n"), same.err
    as_json = run("export", "--selector", f"tag={tag}", "--output", "json", *connect(running_api))
    assert json.loads(as_json.out) == exported_jobs
    json_path = write(tmp_path / "jobs.json", exported_jobs, as_json=True)
    assert run("apply", "-f", json_path, *connect(running_api)).out == "no changes\n"


def test_dry_run_prints_every_change_and_changes_nothing_then_apply_makes_them(
        run: Cli, running_api: RunningApi, tag: str, tmp_path: Path) -> None:
    assert run("apply", "-f", write(tmp_path / "v1.yaml", fleet(tag)), *connect(running_api)).code == 0
    outsider = f"{tag}-outsider"
    assert run("apply", "-f", write(tmp_path / "other.yaml", [
        {"job_id": outsider, "name": "Not in the file", "schedule": "0 1 * * *", "handler": "noop", "tags": [tag]},
        {"job_id": f"{tag}-untagged", "name": "Not selected", "schedule": "0 1 * * *", "handler": "noop"},
    ]), *connect(running_api)).code == 0
    before = exported(run, running_api, tag)

    changed = fleet(tag)
    changed[0]["schedule"] = "30 4 * * *"
    changed[0]["args"] = {"to": ["team@example.com"]}
    changed[1]["enabled"] = False
    del changed[2]  # cleanup leaves the file
    changed.append({"job_id": f"{tag}-new", "name": "New", "schedule": "0 12 * * 1", "handler": "noop", "tags": [tag]})
    path = write(tmp_path / "v2.yaml", changed)
    expected = [
        f'~ update {tag}-report schedule: "0 3 * * *" → "30 4 * * *"',
        f'~ update {tag}-report args: {{"to":["ops@example.com"]}} → {{"to":["team@example.com"]}}',
        f"~ update {tag}-sync enabled: true → false",
        f"+ create {tag}-new",
        f"- delete {tag}-cleanup",
        f"- delete {outsider}",
    ]
    dry = run("apply", "-f", path, "--dry-run", "--prune", "--selector", f"tag={tag}", *connect(running_api))
    assert dry.code == 0, dry.err
    assert dry.out.splitlines() == [*expected,
                                    "1 would be created, 2 would be updated, 2 would be deleted (dry run: nothing changed)"]
    assert exported(run, running_api, tag) == before  # nothing changed

    real = run("apply", "-f", path, "--prune", "--selector", f"tag={tag}", *connect(running_api))
    assert real.code == 0, real.err
    assert real.out.splitlines() == [*expected, "1 created, 2 updated, 2 deleted"]
    assert running_api.status_of(f"/jobs/{outsider}") == 404
    assert running_api.status_of(f"/jobs/{tag}-untagged") == 200  # not carrying the selector's tag: kept
    assert running_api.get(f"/jobs/{tag}-sync")["status"] == "disabled"
    assert [job["job_id"] for job in exported(run, running_api, tag)] == [f"{tag}-report", f"{tag}-sync", f"{tag}-new"]
    assert run("apply", "-f", path, "--prune", "--selector", f"tag={tag}", *connect(running_api)).out == "no changes\n"
    revisions = running_api.get(f"/jobs/{tag}-report/revisions")["data"]
    assert revisions[0]["action"] == "update" and set(revisions[0]["changes"]) == {"schedule", "args"}


def test_a_refused_change_exits_1_and_the_others_are_applied(run: Cli, running_api: RunningApi, tag: str,
                                                             tmp_path: Path) -> None:
    jobs = fleet(tag)[:2]
    jobs.insert(1, {"job_id": f"{tag}-bad", "name": "Bad", "schedule": "0 3 * * *", "handler": "no_such_handler"})
    result = run("apply", "-f", write(tmp_path / "jobs.yaml", jobs), *connect(running_api))
    assert result.code == 1
    assert result.out.splitlines()[-1] == "2 created, 0 updated, 0 deleted, 1 failed"
    assert f"{tag}-bad: Some fields are not valid. (HTTP 422 validation_error)" in result.err
    assert "handler" in result.err
    assert running_api.status_of(f"/jobs/{tag}-sync") == 200
    no_token = run("apply", "-f", write(tmp_path / "more.yaml", [{**fleet(tag)[2]}]), "--api-url", running_api.url)
    assert no_token.code == 1 and "HTTP 401" in no_token.err


@pytest.mark.parametrize("content, message", [
    ("- name: x\n", "job_id is missing"),
    ("job_id: a\n", "expected a list of jobs"),
    ("- job_id: a\n- job_id: a\n", "appears twice"),
    ("- job_id: a\n  colour: blue\n", "unknown field(s) colour"),
    ("- job_id: a\n  schedule: */5 * * * *\n", "neither JSON nor valid YAML"),  # an unquoted * is a YAML alias
    ("- 3\n", "expected a mapping"),
])
def test_a_file_apply_cannot_use_changes_nothing(run: Cli, running_api: RunningApi, tmp_path: Path,
                                                 content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run("apply", "-f", str(path), *connect(running_api))
    assert result.code == 1 and message in result.err, result.err
    assert result.out == ""


def test_usage_errors_exit_2(run: Cli, running_api: RunningApi, tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", [])
    assert run("apply", "-f", path, "--prune", *connect(running_api)).code == 2  # prune needs a selector
    assert run("apply", "-f", path, "--selector", "name=x", *connect(running_api)).code == 2
    assert run("apply", *connect(running_api)).code == 2  # -f is required
    assert run("export", "--output", "table", *connect(running_api)).code == 2
    assert run("apply", "-f", path, *connect(running_api)).out == "no changes\n"  # an empty list


def test_the_console_script_takes_the_options_after_the_subcommand(running_api: RunningApi, tag: str,
                                                                   tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", fleet(tag)[:1])
    created = run_console_script("apply", "-f", path, "--api-url", running_api.url, "--token", running_api.token)
    assert (created.code, created.out) == (0, f"+ create {tag}-report\n1 created, 0 updated, 0 deleted\n"), created.err
    listed = run_console_script("export", "--selector", f"tag={tag}", env={"CRONHIVE_API_URL": running_api.url})
    assert listed.code == 0 and yaml.safe_load(listed.out)[0]["job_id"] == f"{tag}-report"
    assert run_console_script("apply", "--help").out.startswith("usage: cronhive apply")


class RacedClient(HeaderClient):
    """Someone else changes the job between apply's read of it (with its ETag) and its PUT."""

    def job_with_etag(self, job_id: str) -> tuple[dict[str, Any], str | None]:
        current, etag = super().job_with_etag(job_id)
        self.call("PUT", f"/jobs/{job_id}", body={"max_retries": 5})  # no If-Match: it wins
        return current, etag


def test_an_update_is_sent_with_if_match_so_a_change_made_meanwhile_is_not_overwritten(
        run: Cli, running_api: RunningApi, tag: str, tmp_path: Path) -> None:
    job = fleet(tag)[0]
    assert run("apply", "-f", write(tmp_path / "v1.yaml", [job]), *connect(running_api)).code == 0
    client = RacedClient(api_url=running_api.url, token=running_api.token)
    out, err = io.StringIO(), io.StringIO()
    outcome = apply_jobs(client, [{**job, "schedule": "0 5 * * *"}], dry_run=False, prune_tag=None, out=out, err=err)
    assert out.getvalue() == f'~ update {tag}-report schedule: "0 3 * * *" → "0 5 * * *"\n'
    assert outcome.failed == [f"{tag}-report"] and "HTTP 412 precondition_failed" in err.getvalue()
    current = running_api.get(f"/jobs/{tag}-report")
    assert (current["schedule"], current["max_retries"]) == ("0 3 * * *", 5)  # the other change stands, alone
    again = run("apply", "-f", write(tmp_path / "v2.yaml", [{**job, "schedule": "0 5 * * *"}]), *connect(running_api))
    assert again.code == 0 and again.out.splitlines()[-1] == "0 created, 1 updated, 0 deleted"
