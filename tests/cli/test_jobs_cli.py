"""``cronhive jobs ...`` against a real running API (gunicorn, MongoDB, RabbitMQ).

Each test makes its own jobs (ids carry a random tag), so the tests share one API
process and still do not see each other's effects where it matters."""

from __future__ import annotations

import uuid

import pika.exceptions
import pytest

from tests import services
from tests.cli.conftest import RunningApi, run_console_script


def new_id(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(cli, api: RunningApi, job_id: str, *extra: str, schedule: str = "0 3 * * *", handler: str = "noop"):
    result = cli("create", "--api-url", api.url, "--token", api.token, "--job-id", job_id,
                 "--name", f"job {job_id}", "--schedule", schedule, "--handler", handler, *extra)
    assert result.code == 0, result.err
    return result


def queue_depth(api: RunningApi) -> int:
    """Messages waiting on the API's runs queue (0 before the first publish declares it)."""
    try:
        return services.queue_depth(api.rabbitmq_url, api.runs_queue)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return 0
        raise


def table_lines(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


# -- create / get ---------------------------------------------------------------


def test_create_sends_every_flag_and_prints_the_created_job(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    result = cli("create", "--api-url", running_api.url, "--token", running_api.token,
                 "--job-id", job_id, "--name", "Nightly report", "--schedule", "30 2 * * *",
                 "--handler", "sleep", "--timezone", "Europe/Berlin", "--args", '{"seconds": 1, "tags": ["a"]}',
                 "--disabled", "--misfire-policy", "fire_all", "--misfire-grace-s", "120",
                 "--overlap-policy", "buffer_one", "--jitter-s", "7", "--timeout-s", "90", "--max-retries", "3")

    assert result.code == 0, result.err
    printed = result.json()  # json is the default output of create
    stored = running_api.get(f"/jobs/{job_id}")
    expected = {
        "job_id": job_id, "name": "Nightly report", "schedule": "30 2 * * *", "handler": "sleep",
        "timezone": "Europe/Berlin", "args": {"seconds": 1, "tags": ["a"]}, "enabled": False,
        "status": "disabled", "misfire_policy": "fire_all", "misfire_grace_s": 120,
        "overlap_policy": "buffer_one", "jitter_s": 7, "timeout_s": 90, "max_retries": 3,
    }
    for key, value in expected.items():
        assert stored[key] == value, key
        assert printed[key] == value, key


def test_get_prints_json_by_default_and_a_record_as_table(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id, "--timezone", "America/New_York")

    as_json = cli("get", job_id, "--api-url", running_api.url)
    assert as_json.code == 0, as_json.err
    assert as_json.json() == running_api.get(f"/jobs/{job_id}")

    as_table = cli("get", job_id, "--api-url", running_api.url, "--output", "table")
    assert as_table.code == 0, as_table.err
    record = {fields[0]: fields[1:] for fields in table_lines(as_table.out)}
    assert record["job_id"] == [job_id]
    assert record["timezone"] == ["America/New_York"]
    assert record["last_run_status"] == ["-"]  # null shown as "-"


def test_connection_options_work_before_the_command_too(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id)

    result = cli("--api-url", running_api.url, "--output", "table", "get", job_id)

    assert result.code == 0, result.err
    assert ["job_id", job_id] in table_lines(result.out)


# -- list -----------------------------------------------------------------------


def test_list_prints_a_table_by_default_with_one_row_per_job(cli, running_api: RunningApi) -> None:
    ids = [new_id() for _ in range(3)]
    for job_id in ids:
        create(cli, running_api, job_id)

    result = cli("list", "--api-url", running_api.url, "--limit", "100")

    assert result.code == 0, result.err
    lines = table_lines(result.out)
    assert lines[0][:6] == ["JOB_ID", "NAME", "SCHEDULE", "TIMEZONE", "HANDLER", "STATUS"]
    listed = {line[0] for line in lines[1:-1]}
    assert set(ids) <= listed
    total = running_api.get("/jobs?limit=100")["pagination"]["total"]
    assert len(lines) - 2 == total  # header + one row per job + footer
    assert lines[-1][:4] == ["page", "1", "of", "1"]
    assert f"({total} jobs in all)" in result.out


def test_list_json_pages_and_filters_like_the_api(cli, running_api: RunningApi) -> None:
    active, paused = new_id(), new_id()
    create(cli, running_api, active, handler="fail")
    create(cli, running_api, paused, "--disabled", handler="fail")

    page2 = cli("list", "--api-url", running_api.url, "--output", "json", "--page", "2", "--limit", "1")
    assert page2.code == 0, page2.err
    assert page2.json() == running_api.get("/jobs?page=2&limit=1")
    assert page2.json()["pagination"] == {"page": 2, "limit": 1, "total": page2.json()["pagination"]["total"]}

    disabled = cli("list", "--api-url", running_api.url, "-o", "json", "--status", "disabled", "--limit", "100")
    assert disabled.code == 0, disabled.err
    statuses = {job["job_id"]: job["status"] for job in disabled.json()["data"]}
    assert paused in statuses and active not in statuses
    assert set(statuses.values()) == {"disabled"}

    by_handler = cli("list", "--api-url", running_api.url, "-o", "json", "--handler", "fail", "--limit", "100")
    assert by_handler.code == 0, by_handler.err
    handlers = {job["job_id"]: job["handler"] for job in by_handler.json()["data"]}
    assert {active, paused} <= set(handlers)
    assert set(handlers.values()) == {"fail"}


# -- update ---------------------------------------------------------------------


def test_update_changes_only_the_given_fields(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id, "--max-retries", "1")

    paused = cli("update", job_id, "--api-url", running_api.url, "--token", running_api.token,
                 "--schedule", "*/5 * * * *", "--disabled", "--args", '{"to": "ops"}')
    assert paused.code == 0, paused.err
    assert paused.json()["status"] == "disabled"
    assert paused.json()["next_trigger_at"] is None
    stored = running_api.get(f"/jobs/{job_id}")
    assert (stored["schedule"], stored["enabled"], stored["args"]) == ("*/5 * * * *", False, {"to": "ops"})
    assert stored["max_retries"] == 1  # not given: unchanged

    resumed = cli("update", job_id, "--api-url", running_api.url, "--token", running_api.token, "--enabled")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["status"] == "active"
    assert running_api.get(f"/jobs/{job_id}")["next_trigger_at"] is not None


# -- trigger / runs -------------------------------------------------------------


def test_trigger_creates_a_run_that_runs_lists(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id)  # forbid: the run reserves the job's lease
    depth_before = queue_depth(running_api)

    triggered = cli("trigger", job_id, "--api-url", running_api.url, "--token", running_api.token)

    assert triggered.code == 0, triggered.err
    body = triggered.json()
    assert body["job_id"] == job_id and body["lock_acquired"] is True
    run_id = body["run_id"]
    assert run_id.startswith("run_")
    assert queue_depth(running_api) == depth_before + 1

    table = cli("runs", job_id, "--api-url", running_api.url)
    assert table.code == 0, table.err
    lines = table_lines(table.out)
    assert lines[0][:3] == ["RUN_ID", "TRIGGER", "STATUS"]
    assert lines[1][:3] == [run_id, "manual", "queued"]
    assert lines[-1][:4] == ["page", "1", "of", "1"]

    as_json = cli("runs", job_id, "--api-url", running_api.url, "--output", "json")
    assert as_json.code == 0, as_json.err
    assert as_json.json() == running_api.get(f"/jobs/{job_id}/runs")
    assert [run["run_id"] for run in as_json.json()["data"]] == [run_id]


def test_trigger_refused_by_the_lease_exits_1_with_the_api_message(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id)  # overlap_policy forbid: the first run reserves the lease
    first = cli("trigger", job_id, "--api-url", running_api.url, "--token", running_api.token)
    assert first.code == 0, first.err

    second = cli("trigger", job_id, "--api-url", running_api.url, "--token", running_api.token)

    assert second.code == 1
    assert second.out == ""
    assert "HTTP 409" in second.err and "lease" in second.err
    assert "Traceback" not in second.err


# -- delete and API errors ------------------------------------------------------


def test_delete_then_get_is_a_404_with_the_api_message(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id)

    deleted = cli("delete", job_id, "--api-url", running_api.url, "--token", running_api.token)
    assert deleted.code == 0, deleted.err
    assert deleted.json() == {"deleted": True, "job_id": job_id}
    assert running_api.status_of(f"/jobs/{job_id}") == 404

    missing = cli("get", job_id, "--api-url", running_api.url)
    assert missing.code == 1
    assert missing.out == ""
    assert missing.err.splitlines()[0] == f"cronhive: job {job_id!r} not found (HTTP 404 job_not_found)"


def test_invalid_fields_print_the_api_message_and_each_field(cli, running_api: RunningApi) -> None:
    result = cli("create", "--api-url", running_api.url, "--token", running_api.token,
                 "--name", "bad", "--schedule", "0 0 31 2 *", "--handler", "no_such_handler")

    assert result.code == 1
    lines = result.err.splitlines()
    assert lines[0].startswith("cronhive: ") and "HTTP 422" in lines[0]
    assert any(line.strip().startswith("schedule:") for line in lines[1:])
    assert any(line.strip().startswith("handler:") and "no_such_handler" in line for line in lines[1:])


def test_duplicate_job_id_is_a_409(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id)

    again = cli("create", "--api-url", running_api.url, "--token", running_api.token, "--job-id", job_id,
                "--name", "again", "--schedule", "@daily", "--handler", "noop")

    assert again.code == 1
    assert again.err.splitlines()[0] == f"cronhive: job_id {job_id!r} already exists (HTTP 409 duplicate_job)"


def test_mutating_without_the_token_is_refused_and_says_how_to_pass_it(cli, running_api: RunningApi) -> None:
    job_id = new_id()

    result = cli("create", "--api-url", running_api.url, "--job-id", job_id,
                 "--name", "no token", "--schedule", "@daily", "--handler", "noop")

    assert result.code == 1
    assert "HTTP 401" in result.err and "--token" in result.err
    assert running_api.status_of(f"/jobs/{job_id}") == 404


def test_url_and_token_come_from_the_environment(cli, running_api: RunningApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONHIVE_API_URL", running_api.url)
    monkeypatch.setenv("API_TOKEN", running_api.token)
    job_id = new_id()

    result = cli("create", "--job-id", job_id, "--name", "from env", "--schedule", "@hourly", "--handler", "noop")

    assert result.code == 0, result.err
    assert running_api.get(f"/jobs/{job_id}")["schedule"] == "@hourly"


def test_usage_errors_exit_2_without_calling_the_api(cli, running_api: RunningApi) -> None:
    bad_json = cli("create", "--api-url", running_api.url, "--token", running_api.token,
                   "--name", "x", "--schedule", "@daily", "--handler", "noop", "--args", "{not json")
    assert bad_json.code == 2
    assert "--args" in bad_json.err and "not valid JSON" in bad_json.err

    nothing = cli("update", "some-job", "--api-url", running_api.url, "--token", running_api.token)
    assert nothing.code == 2
    assert "at least one field" in nothing.err


# -- the installed console script -----------------------------------------------


def test_console_script_runs_jobs_against_the_api(running_api: RunningApi) -> None:
    job_id = new_id()
    created = run_console_script("jobs", "create", "--job-id", job_id, "--name", "console", "--schedule", "@weekly",
                                 "--handler", "noop", env={"CRONHIVE_API_URL": running_api.url,
                                                           "API_TOKEN": running_api.token})
    assert created.code == 0, created.err

    listed = run_console_script("jobs", "list", "--limit", "100", env={"CRONHIVE_API_URL": running_api.url})
    assert listed.code == 0, listed.err
    assert job_id in {line.split()[0] for line in listed.out.splitlines()[1:-1]}


def test_unreachable_api_prints_one_clear_line_and_exits_2() -> None:
    port = services.free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"

    for result in (run_console_script("jobs", "list", "--api-url", url),
                   run_console_script("jobs", "get", "some-job", env={"CRONHIVE_API_URL": url})):
        assert result.code == 2
        assert result.out == ""
        assert result.err.splitlines() == [f"cronhive: cannot reach the API at {url}: Connection refused"]


# -- history ----------------------------------------------------------------------


def test_history_lists_who_changed_what_newest_first(cli, running_api: RunningApi) -> None:
    job_id = new_id()
    create(cli, running_api, job_id)
    assert cli("update", job_id, "--schedule", "0 4 * * *", "--api-url", running_api.url,
               "--token", running_api.token).code == 0
    assert cli("update", job_id, "--disabled", "--api-url", running_api.url, "--token", running_api.token).code == 0

    result = cli("history", job_id, "--api-url", running_api.url)
    assert result.code == 0, result.err
    lines = table_lines(result.out)
    assert lines[0] == ["REVISION", "AT", "ACTOR", "ACTION", "CHANGES"]
    assert [line[0] for line in lines[1:4]] == ["3", "2", "1"]
    assert lines[1][2:] == ["admin", "pause", "enabled:", "true", "→", "false"]
    assert " ".join(lines[2][4:]) == 'schedule: "0 3 * * *" → "0 4 * * *"'
    assert lines[3][3] == "create"
    assert result.out.strip().endswith("page 1 of 1 (3 revisions in all)")
    as_json = cli("history", job_id, "--api-url", running_api.url, "-o", "json").json()
    assert as_json["data"][0]["changes"] == {"enabled": [True, False]}
    missing = cli("history", new_id(), "--api-url", running_api.url)
    assert missing.code == 1 and "job_not_found" in missing.err


# -- If-Match -----------------------------------------------------------------------


def test_update_and_delete_send_if_match(cli, running_api: RunningApi, monkeypatch: pytest.MonkeyPatch) -> None:
    from cronhive.cli.jobs import ApiClient

    job_id = new_id()
    create(cli, running_api, job_id)
    sent: list[tuple[str, dict[str, str]]] = []
    real = ApiClient.exchange

    def recording(self, method, path, **kwargs):
        sent.append((method, dict(kwargs.get("headers") or {})))
        return real(self, method, path, **kwargs)

    monkeypatch.setattr(ApiClient, "exchange", recording)
    auth = ("--api-url", running_api.url, "--token", running_api.token)
    assert cli("update", job_id, "--name", "renamed", *auth).code == 0
    assert sent == [("GET", {}), ("PUT", {"If-Match": '"1"'})]  # the ETag read just before

    stale = cli("update", job_id, "--name", "again", "--if-match", "1", *auth)
    assert stale.code == 1
    assert "precondition_failed" in stale.err and "HTTP 412" in stale.err and "jobs history" in stale.err
    assert running_api.get(f"/jobs/{job_id}")["name"] == "renamed"
    refused = cli("delete", job_id, "--if-match", "1", *auth)
    assert refused.code == 1 and "412" in refused.err and running_api.status_of(f"/jobs/{job_id}") == 200

    sent.clear()
    assert cli("delete", job_id, "--if-match", '"2"', *auth).code == 0
    assert sent == [("DELETE", {"If-Match": '"2"'})]
    assert running_api.status_of(f"/jobs/{job_id}") == 404
