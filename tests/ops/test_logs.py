"""Logs of the real API, scheduler and worker processes: JSON, one event a line,
the ids on every line about a run, and never a password from a connection URL."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from pymongo import MongoClient

from tests import services
from tests.ops.conftest import RUN_ID, Proc, System, start_process, stop_all, wait_for, wait_healthy

pytestmark = pytest.mark.slow

PASSWORD = f"S3cret-{uuid.uuid4().hex[:12]}"


def drop_database(uri: str, name: str) -> None:
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


def about(events: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [event for event in events if all(event.get(key) == value for key, value in fields.items())]


def test_every_line_of_every_process_is_a_json_event(system: System) -> None:
    for proc in system.procs:
        events = proc.events()  # fails on the first line that is not a JSON object
        assert events, proc.name
        for event in events:
            assert {"ts", "level", "logger", "event"} <= set(event), (proc.name, event)
            assert event["ts"].endswith("Z") and event["level"] in {"debug", "info", "warning", "error", "critical"}


def test_lines_about_a_run_carry_its_job_and_run_ids(system: System) -> None:
    for proc in system.procs:
        for event in proc.events():
            mentioned = RUN_ID.findall(event["event"])
            if mentioned:
                assert RUN_ID.fullmatch(event.get("run_id", "")) and event.get("job_id"), (proc.name, event)
    boom = system.run_ids["boom"]

    api = system.api.events()
    assert about(api, event="run triggered", job_id="boom", run_id=boom)

    worker = system.worker.events()
    final = about(worker, job_id="boom", run_id=boom, attempt=2)
    assert any(event["event"].startswith("run failed") for event in final), final
    assert all(event["worker"].rsplit(":", 1)[1].isdigit() for event in final)  # hostname:pid
    # the failure is cronhive's one WARNING per attempt, with the ids; Dramatiq writes no
    # "unhandled exception" error about it (Dramatiq's own lines, when it writes one about a
    # run, name the run too: tests/ops/test_log_format.py)
    assert [event["level"] for event in final if event["event"].startswith("run failed")] == ["warning"]
    assert not about(worker, logger="dramatiq.worker.WorkerThread", run_id=boom)
    tick = [event for event in about(worker, job_id="tick") if event["event"].startswith("run succeeded")]
    assert len(tick) >= 3 and all(RUN_ID.fullmatch(event["run_id"]) and event["worker"] for event in tick)

    scheduler = system.scheduler.events()
    elected = [event for event in scheduler if event["event"] == "became the leader"]
    assert elected and elected[0]["term"] >= 1 and elected[0]["holder"].endswith(f":{system.scheduler.pid}")
    # a pass's skipped slots are one line (counts by reason, the first jobs), not a line per slot
    skipped = [event for event in scheduler if "recorded skipped" in event["event"] and "gap" in event["job_ids"]]
    assert skipped and all(event["term"] >= 1 and sum(event["counts"].values()) >= 1 for event in skipped)


def test_no_password_appears_in_the_output_of_a_working_system(system: System) -> None:
    for proc in system.procs:
        output = proc.output()
        for password in system.passwords:
            assert password not in output, proc.name


# -- services unreachable, credentials in the URLs ------------------------------------------


def closed_port_url(scheme: str, user: str, path: str) -> str:
    return f"{scheme}://{user}:{PASSWORD}@127.0.0.1:{services.free_port()}{path}"


def assert_clean(proc: Proc) -> list[dict[str, Any]]:
    """The process's output is JSON lines and never contains the password."""
    output = proc.output()
    assert PASSWORD not in output, f"{proc.name} logged the password:\n{output[-3000:]}"
    return proc.events()


def start_unreachable(tmp_path: Path, mongodb_uri: str, rabbitmq_url: str,
                      db: str) -> tuple[dict[str, Proc], dict[str, str]]:
    """Schedulers, workers and APIs (all at LOG_LEVEL=DEBUG) whose MongoDB or RabbitMQ
    URL carries the password and points at a closed port; the APIs' base URLs."""
    bad_mongo = closed_port_url("mongodb", "admin", "/?authSource=admin")
    bad_rabbit = closed_port_url("amqp", "cron", "/%2F")
    common = {"MONGODB_DB": db, "MONGODB_TIMEOUT_MS": "500", "LOG_LEVEL": "DEBUG", "METRICS_PORT": "0",
              "RUNS_QUEUE": f"cronhive.test.{db}.runs"}
    no_mongo = {**common, "MONGODB_URI": bad_mongo, "RABBITMQ_URL": rabbitmq_url}
    no_rabbit = {**common, "MONGODB_URI": mongodb_uri, "RABBITMQ_URL": bad_rabbit}
    procs = {
        "scheduler-no-mongo": start_process("scheduler-no-mongo", ["scheduler"], no_mongo, tmp_path),
        "scheduler-no-rabbit": start_process("scheduler-no-rabbit", ["scheduler"], no_rabbit, tmp_path),
        "worker-no-mongo": start_process("worker-no-mongo", ["worker"], no_mongo, tmp_path),
        "worker-no-rabbit": start_process("worker-no-rabbit", ["worker"], no_rabbit, tmp_path),
    }
    urls = {}
    for name, env in (("api-no-mongo", no_mongo), ("api-no-rabbit", no_rabbit)):
        port = services.free_port()
        procs[name] = start_process(name, ["api"], {**env, "API_PORT": str(port), "API_WORKERS": "1"}, tmp_path)
        urls[name] = f"http://127.0.0.1:{port}"
    return procs, urls


def test_passwords_in_urls_never_appear_when_services_are_unreachable(
    tmp_path: Path, mongodb_uri: str, rabbitmq_url: str
) -> None:
    db = f"cronhive_ops_logs_{uuid.uuid4().hex[:8]}"
    procs, urls = start_unreachable(tmp_path, mongodb_uri, rabbitmq_url, db)
    try:
        responses: list[requests.Response] = []
        for name in ("api-no-mongo", "api-no-rabbit"):
            base = urls[name]
            wait_healthy(procs[name], f"{base}/healthz")
            ready = requests.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 503, ready.text
            responses.append(ready)
        base = urls["api-no-mongo"]
        responses.append(requests.get(f"{base}/api/v1/cron/jobs", timeout=10))
        assert responses[-1].status_code == 503
        base = urls["api-no-rabbit"]
        created = requests.post(f"{base}/api/v1/cron/jobs", timeout=10,
                                json={"job_id": "nightly", "name": "nightly", "schedule": "0 3 * * *", "handler": "noop"})
        assert created.status_code == 201, created.text
        responses.append(requests.post(f"{base}/api/v1/cron/jobs/nightly/trigger", timeout=10))
        assert responses[-1].status_code == 503
        for response in responses:
            assert PASSWORD not in response.text and "***@127.0.0.1" in response.text, response.text

        for name in ("scheduler-no-mongo", "scheduler-no-rabbit", "worker-no-mongo", "worker-no-rabbit"):
            assert procs[name].wait_exit(30) == 1, procs[name].output()[-2000:]
        for name in ("scheduler-no-mongo", "worker-no-mongo"):
            errors = [event for event in assert_clean(procs[name]) if event["level"] == "error"]
            assert len(errors) == 1 and "MongoDB is unreachable at mongodb://admin:***@127.0.0.1:" in errors[0]["event"]
        for name in ("scheduler-no-rabbit", "worker-no-rabbit"):
            errors = [event for event in assert_clean(procs[name]) if event["level"] == "error"]
            assert len(errors) == 1 and "RabbitMQ is unreachable at amqp://cron:***@127.0.0.1:" in errors[0]["event"]
    finally:
        stop_all(list(procs.values()))
        drop_database(mongodb_uri, db)
        queue = f"cronhive.test.{db}.runs"  # declared by the readiness check of api-no-mongo
        services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")
    for name in ("api-no-mongo", "api-no-rabbit"):
        assert_clean(procs[name])


def test_gunicorns_own_lines_are_json_too(tmp_path: Path, mongodb_uri: str, rabbitmq_url: str) -> None:
    port, tag = services.free_port(), uuid.uuid4().hex[:8]
    env = {"MONGODB_URI": mongodb_uri, "MONGODB_DB": f"cronhive_ops_gunicorn_{tag}", "RABBITMQ_URL": rabbitmq_url,
           "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "API_PORT": str(port), "API_WORKERS": "1", "LOG_LEVEL": "INFO"}
    api = start_process("api-gunicorn", ["api"], env, tmp_path)
    try:
        wait_healthy(api, f"http://127.0.0.1:{port}/healthz")
        worker_pid = int(Path(f"/proc/{api.pid}/task/{api.pid}/children").read_text().split()[0])
        os.kill(worker_pid, signal.SIGKILL)  # gunicorn reports the dead worker and starts another
        wait_for(lambda: "SIGKILL" in api.output(), 10, "gunicorn to report the killed worker")
        wait_healthy(api, f"http://127.0.0.1:{port}/healthz")
    finally:
        api.stop()
        drop_database(mongodb_uri, env["MONGODB_DB"])
    killed = [event for event in api.events() if "SIGKILL" in event["event"]]
    assert killed and killed[0]["level"] == "error"
