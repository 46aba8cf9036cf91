"""Issue 12's items 1–4 end to end with real worker processes (``python -m cronhive.worker``,
tests/worker/cluster.py) on the real RabbitMQ and MongoDB-wire store, calling a local
HTTP server the test starts on 127.0.0.1 (never any other address):

* the ``http`` handler's request as received and the output recorded, an unexpected
  status, the destination guard refusing 127.0.0.2 when only 127.0.0.1 is allowed and
  a name (``localhost``) that resolves to a refused address — nothing sent;
* a handler's output and log through ``GET /runs/:run_id``;
* notifications signed with NOTIFY_SECRET (verified by the server's side of the test),
  failure then recovery, skipped, and one redelivered after its worker was SIGKILLed
  between the run's outcome and the delivery's record.

Jobs are created through the store (so a URL the API's guard would refuse at create
reaches the worker's guard at call time); runs by `trigger_job`, as the API does."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from cronhive.api.app import close_app, create_app
from cronhive.broker import RunPublisher
from cronhive.dispatch import trigger_job
from cronhive.domain import FINAL_RUN_STATUSES, Notify, Run, new_run, new_run_id, utcnow
from cronhive.enums import NotifyEvent, RunStatus, Trigger
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import hooks, services
from tests.worker.cluster import WorkerCluster, wait_for

LEASE_S = 3
SECRET = "notify-secret-for-tests"
HOOK_TOKEN = "tok-" + uuid.uuid4().hex[:8]

pytestmark = pytest.mark.slow


@dataclass
class System:
    settings: Settings
    store: MongoStore
    publisher: RunPublisher

    def job(self, job_id: str, **fields: Any) -> None:
        body = {"job_id": job_id, "name": f"Job {job_id}", "schedule": "0 0 1 1 *", "handler": "noop",
                "enabled": False, **fields}
        self.store.create_job(body, utcnow())

    def trigger(self, job_id: str) -> str:
        return trigger_job(self.store, self.publisher, job_id, utcnow(), LEASE_S).run_id

    def final(self, run_id: str, timeout_s: float = 20) -> Run:
        return wait_for(lambda: (run := self.store.get_run(run_id)).status in FINAL_RUN_STATUSES and run,
                        timeout_s, f"run {run_id} to end")

    def delivered(self, run_id: str, timeout_s: float = 20) -> Run:
        def done() -> Run | None:
            run = self.store.get_run(run_id)
            return run if run.notifications and all(n.status != "pending" for n in run.notifications) else None

        return wait_for(done, timeout_s, f"the notifications of {run_id} to be delivered")


def worker_env(mongodb_uri: str, rabbitmq_url: str, tag: str, allowed: str) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items()
            if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    return {
        **base,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"cronhive_http_{tag}",
        "MONGODB_TIMEOUT_MS": "2000",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "JOB_LEASE_S": str(LEASE_S),
        "RETRY_BACKOFF_MS": "300",
        "HANDLER_MODULES": "tests.worker.handlers_for_output",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
        "HTTP_HANDLER_ALLOWED_HOSTS": allowed,
        "NOTIFY_SECRET": SECRET,
        "NOTIFY_BACKOFF_MS": "200",
        "NOTIFY_MAX_ATTEMPTS": "3",
        "NOTIFY_TIMEOUT_S": "1",
        "CRONHIVE_SECRET_HOOK_TOKEN": HOOK_TOKEN,
    }


@pytest.fixture(scope="module")
def running(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start a cluster of ``size`` workers whose guard allows ``allowed``; all stopped at the end."""
    started: list[tuple[WorkerCluster, System]] = []

    def start(allowed: str, size: int) -> tuple[WorkerCluster, System]:
        tag = uuid.uuid4().hex[:10]
        env = worker_env(mongodb_uri, rabbitmq_url, tag, allowed)
        settings = Settings.from_env(env)
        store = MongoStore.open(settings)
        store.ensure_indexes()
        cluster = WorkerCluster(env, tmp_path_factory.mktemp("workers"), size)
        system = System(settings, store, RunPublisher.open(settings))
        started.append((cluster, system))
        cluster.start()
        return cluster, system

    yield start
    for cluster, system in started:
        cluster.stop()
        system.publisher.close()
        system.store.client.drop_database(system.settings.mongodb_db)
        system.store.close()
        queue = system.settings.runs_queue
        services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")


@pytest.fixture(scope="module")
def local(running: Any) -> System:
    """Two workers whose guard allows 127.0.0.1 only."""
    return running("127.0.0.1", 2)[1]


@pytest.fixture
def hook() -> Iterator[hooks.Hook]:
    with hooks.serve() as server:
        yield server


def signed(request: hooks.Received) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers.get("X-Cronhive-Signature", ""), expected)


# -- the http handler ------------------------------------------------------------------


def test_an_http_job_sends_its_request_and_records_the_response(local: System, hook: hooks.Hook) -> None:
    hook.routes["/run"] = (201, b'{"accepted": 3}')
    local.job("call", handler="http", args={
        "url": hook.url("/run?tag=1"), "method": "PUT", "body": {"scope": ["daily", 1, None]},
        "headers": {"Authorization": "Bearer ${secret:HOOK_TOKEN}", "X-Team": "ops"}, "expect_status": [200, 201]})
    run = local.final(local.trigger("call"))

    assert run.status == "succeeded", run.error
    (request,) = hook.received()
    assert (request.method, request.path) == ("PUT", "/run?tag=1")
    assert request.json() == {"scope": ["daily", 1, None]}
    assert request.headers["Authorization"] == f"Bearer {HOOK_TOKEN}"  # resolved on the worker
    assert request.headers["X-Team"] == "ops" and request.headers["Content-Type"] == "application/json"
    assert request.headers["Host"] == f"127.0.0.1:{hook.port}"
    output = run.output.output
    assert output["status"] == 201 and output["body"] == '{"accepted": 3}'
    assert output["headers"]["content-type"] == "application/json" and output["headers"]["content-length"] == "15"
    assert "answered 201" in (run.output.log or "")
    # the job keeps the placeholder; the value is never stored
    assert local.store.get_job("call").args["headers"]["Authorization"] == "Bearer ${secret:HOOK_TOKEN}"
    assert HOOK_TOKEN not in str(local.store.runs.find_one({"_id": run.run_id}))


def test_an_unexpected_status_fails_the_run_with_its_type_and_keeps_the_response(local: System,
                                                                                hook: hooks.Hook) -> None:
    hook.routes["/broken"] = (500, b"database is down")
    local.job("broken", handler="http", args={"url": hook.url("/broken")})
    run = local.final(local.trigger("broken"))
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "unexpected_status" and "answered 500, expected 2xx" in run.error.message
    assert run.output.output["status"] == 500 and run.output.output["body"] == "database is down"
    assert len(hook.received()) == 1


def test_the_guard_refuses_127_0_0_2_when_only_127_0_0_1_is_allowed(local: System, hook: hooks.Hook) -> None:
    local.job("elsewhere", handler="http", args={"url": f"http://127.0.0.2:{hook.port}/run"})
    run = local.final(local.trigger("elsewhere"))
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "destination_not_allowed" and "127.0.0.2" in run.error.message
    assert run.output.output is None and hook.received() == []


def test_a_name_that_resolves_to_a_refused_address_is_refused_and_nothing_is_sent(running: Any,
                                                                                  hook: hooks.Hook) -> None:
    _, refusing = running("127.0.0.2", 1)  # localhost resolves to 127.0.0.1 (and ::1): neither allowed
    refusing.job("by_name", handler="http", args={"url": f"http://localhost:{hook.port}/run"},
                 notify=Notify(url=f"http://localhost:{hook.port}/hook", on=(NotifyEvent.FAILURE,)))
    run = refusing.final(refusing.trigger("by_name"))
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "destination_not_allowed"
    assert "localhost resolves to" in run.error.message and "127.0.0.1" in run.error.message
    # the failure notification goes to the same refused name: never sent either
    (notification,) = refusing.delivered(run.run_id).notifications
    assert (notification.status, notification.attempts) == ("failed", 3)
    assert (notification.error or "").startswith("destination_not_allowed")
    assert hook.received() == []  # the server on 127.0.0.1 heard nothing


# -- output and log ------------------------------------------------------------------------


def test_a_handlers_output_and_log_are_shown_by_the_api(local: System) -> None:
    local.job("emitter", handler="emit", args={"lines": ["scanned 3 rows", "<b>done</b>"],
                                                "value": {"rows": 3, "names": ["a", "b"]}})
    run = local.final(local.trigger("emitter"))
    assert run.status == "succeeded"
    app = create_app(local.settings)
    try:
        view = app.test_client().get(f"/api/v1/cron/runs/{run.run_id}").get_json()
    finally:
        close_app(app)
    assert view["output"] == {"rows": 3, "names": ["a", "b"]} and view["output_truncated"] is False
    lines = view["log"].splitlines()
    assert [line.split(" ", 2)[1:] for line in lines] == [["INFO", "scanned 3 rows"], ["INFO", "<b>done</b>"]]


def test_a_large_output_is_cut_and_marked(local: System) -> None:
    local.job("big", handler="emit", args={"value": {"blob": "x" * 15000}})  # args are at most 16 KiB
    run = local.final(local.trigger("big"))
    assert run.output.output == {"blob": "x" * 15000} and run.output.truncated is False
    local.job("many", handler="emit", args={"lines": [f"line {i} " + "y" * 200 for i in range(60)]})
    run = local.final(local.trigger("many"))
    assert run.output.log is not None and run.output.log.count("\n") == 59


# -- notifications ---------------------------------------------------------------------------


def test_failure_then_recovery_are_posted_signed(local: System, hook: hooks.Hook) -> None:
    notify = Notify(url=hook.url(), on=(NotifyEvent.FAILURE, NotifyEvent.RECOVERY),
                    headers={"Authorization": "Bearer ${secret:HOOK_TOKEN}"})
    local.job("healing", handler="emit", args={"fail": True, "message": "disk full"}, notify=notify)
    failed = local.final(local.trigger("healing"))
    assert failed.status == "failed"
    local.delivered(failed.run_id)
    local.store.update_job("healing", {"args": {"value": "ok"}}, utcnow())
    healed = local.final(local.trigger("healing"))
    assert healed.status == "succeeded"
    local.delivered(healed.run_id)
    again = local.final(local.trigger("healing"))
    assert again.status == "succeeded" and again.notifications == ()

    first, second = hook.wait(2)
    assert signed(first) and signed(second)
    assert first.headers["Authorization"] == f"Bearer {HOOK_TOKEN}"
    assert first.json() == {
        "event": "failure", "job_id": "healing", "job_name": "Job healing", "run_id": failed.run_id,
        "status": "failed", "scheduled_for": first.json()["scheduled_for"], "finished_at": first.json()["finished_at"],
        "attempt": 1, "error": {"type": "EmitFailed", "message": "disk full", "traceback": first.json()["error"]["traceback"]},
    }
    assert (second.json()["event"], second.json()["run_id"], second.json()["status"]) == (
        "recovery", healed.run_id, "succeeded")
    record = local.store.get_run(failed.run_id).notifications[0]
    assert (record.status, record.attempts, record.response_status) == ("delivered", 1, 200)
    assert len(hook.received()) == 2


def test_a_skipped_run_is_posted(local: System, hook: hooks.Hook) -> None:
    local.job("busy", handler="emit", notify=Notify(url=hook.url(), on=(NotifyEvent.SKIPPED,)))
    # another run holds the job's lease (forbid): the slot's run is skipped by the worker
    local.store.jobs.update_one({"_id": "busy"}, {"$set": {"lease_term": 3, "lease": {
        "holder": "worker:9", "run_id": "run_other", "token": 3, "expires_at": utcnow().replace(year=2100)}}})
    slot = utcnow().replace(microsecond=0)
    other = replace(new_run(local.store.get_job("busy"), new_run_id(slot), Trigger.SCHEDULE, slot, utcnow(), None),
                    status=RunStatus.QUEUED)
    local.store.insert_run(other)
    local.publisher.publish_run(other.run_id, "busy")
    skipped = local.final(other.run_id)
    assert skipped.status == "skipped" and skipped.error is not None and skipped.error.type == "overlap"
    (request,) = hook.wait(1)
    assert signed(request)
    assert (request.json()["event"], request.json()["run_id"], request.json()["status"]) == (
        "skipped", other.run_id, "skipped")
    assert local.delivered(other.run_id).notifications[0].status == "delivered"


def test_a_notification_is_redelivered_after_its_worker_is_killed(running: Any, hook: hooks.Hook) -> None:
    cluster, system = running("127.0.0.1", 1)
    hook.hold = 1  # the first delivery is received and never answered: the worker is mid-delivery
    system.job("doomed", handler="emit", args={"fail": True}, notify=Notify(url=hook.url(), on=(NotifyEvent.FAILURE,)))
    run = system.final(system.trigger("doomed"))
    assert run.status == "failed"
    (first,) = hook.wait(1)
    # the outcome is recorded; the delivery is not: SIGKILL the only worker now
    cluster.workers[0].kill()
    pending = system.store.get_run(run.run_id).notifications[0]
    assert (pending.status, pending.attempts) == ("pending", 0)

    cluster.start()  # a new worker process; the dead one's claim runs out (2 × 1 s + 5 s)
    second = hook.wait(2)[1]
    delivered = system.delivered(run.run_id)
    (notification,) = delivered.notifications
    assert (notification.status, notification.attempts, notification.response_status) == ("delivered", 1, 200)
    assert second.body == first.body and signed(first) and signed(second)  # the same notification, again
    assert first.headers["X-Cronhive-Delivery"] == second.headers["X-Cronhive-Delivery"] == f"{run.run_id}:failure"
    assert len(hook.received()) == 2
