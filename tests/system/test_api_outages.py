"""The API while MongoDB or RabbitMQ is unreachable: 503 in the one shape, nothing
half-done left behind, and recovery by itself when the service returns.

MongoDB: the test's own SecantusDB server on a fixed port and data directory,
killed and started again. RabbitMQ: the machine's broker is shared with other
tests, so it is never stopped; the app reaches it through a TCP proxy owned by
the test, which is closed (a closed local port, live connections cut) and
reopened on the same port."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.services import SecantusServer

pytestmark = pytest.mark.slow

BASE = "/api/v1/cron"
TIMEOUT_MS = 500
#: generous: a 503 comes after the server-selection timeout, not pymongo's 30 s default
ANSWER_WITHIN_S = 8.0
JOB = {"name": "Outage proof", "schedule": "0 8 * * *", "handler": "noop"}


def assert_unavailable(response: Any, code: str) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert response.headers["Retry-After"]


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def wait_until_ok(call: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        response = call()
        if response.status_code < 500 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


# -- MongoDB --------------------------------------------------------------------------


@pytest.fixture
def own_mongodb(tmp_path: Path) -> Iterator[SecantusServer]:
    """A SecantusDB server only this test uses (not started yet)."""
    server = SecantusServer(port=services.free_port(), data_dir=str(tmp_path / "mongodb"))
    yield server
    server.stop()


def test_mongodb_outage_gives_503_and_the_api_recovers_by_itself(own_mongodb: SecantusServer, rabbitmq_url: str) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = Settings.from_env({
        "MONGODB_URI": own_mongodb.uri, "MONGODB_DB": "cronhive_outage", "MONGODB_TIMEOUT_MS": str(TIMEOUT_MS),
        "RABBITMQ_URL": rabbitmq_url, "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "LOG_LEVEL": "CRITICAL",
    })
    app = create_app(settings)
    client = app.test_client()
    try:
        # down from the start: the app was never connected, its indexes never created
        response, elapsed = timed(lambda: client.post(f"{BASE}/jobs", json=JOB))
        assert_unavailable(response, "mongodb_unavailable")
        assert elapsed < ANSWER_WITHIN_S
        assert client.get("/readyz").status_code == 503

        own_mongodb.start()
        created = wait_until_ok(lambda: client.post(f"{BASE}/jobs", json=JOB))
        assert created.status_code == 201, created.get_data(as_text=True)
        job_id = created.get_json()["job_id"]

        own_mongodb.kill()  # SIGKILL: no clean shutdown
        for request in (
            lambda: client.get(f"{BASE}/jobs"),
            lambda: client.get(f"{BASE}/jobs/{job_id}"),
            lambda: client.put(f"{BASE}/jobs/{job_id}", json={"enabled": False}),
            lambda: client.post(f"{BASE}/jobs/{job_id}/trigger"),
            lambda: client.get(f"{BASE}/scheduler"),
        ):
            response, elapsed = timed(request)
            assert_unavailable(response, "mongodb_unavailable")
            assert elapsed < ANSWER_WITHIN_S
        assert client.get("/readyz").get_json()["checks"]["mongodb"] != "ok"
        # what needs no database still answers
        assert client.get("/healthz").status_code == 200
        assert client.get(f"{BASE}/handlers").status_code == 200
        assert client.post(f"{BASE}/schedules/preview", json={"schedule": "@daily", "count": 1}).status_code == 200

        own_mongodb.start()  # same port, same data directory; the app is not restarted
        listed = wait_until_ok(lambda: client.get(f"{BASE}/jobs"))
        assert listed.status_code == 200
        assert [job["job_id"] for job in listed.get_json()["data"]] == [job_id]  # durable across the kill
        assert client.get(f"{BASE}/jobs/{job_id}").get_json()["status"] == "active"  # the PUT never happened
        assert client.post(f"{BASE}/jobs/{job_id}/trigger").status_code == 202
        assert client.get("/readyz").status_code == 200
    finally:
        close_app(app)
        services.delete_queues(rabbitmq_url, settings.runs_queue, f"{settings.runs_queue}.DQ", f"{settings.runs_queue}.XQ")


# -- RabbitMQ ---------------------------------------------------------------------------


class TcpProxy:
    """Forwards a local port to RabbitMQ. ``stop`` closes the port and cuts every
    connection (what clients see when the broker goes away); ``start`` reopens it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = services.free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone would leave the port listening
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def proxied(settings: Settings, store: MongoStore) -> Iterator[tuple[TcpProxy, FlaskClient]]:
    """An app whose RabbitMQ is behind a proxy the test controls (closed at first)."""
    parts = urlsplit(settings.rabbitmq_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    app = create_app(settings.replace(rabbitmq_url=urlunsplit(parts._replace(netloc=netloc))))
    try:
        yield proxy, app.test_client()
    finally:
        close_app(app)
        proxy.stop()


def create_job(client: FlaskClient, job_id: str, **extra: Any) -> None:
    assert client.post(f"{BASE}/jobs", json={**JOB, "job_id": job_id, **extra}).status_code == 201


def assert_nothing_left_behind(store: MongoStore, job_id: str) -> None:
    job = store.jobs.find_one({"_id": job_id})
    assert job["lease"] is None and job["buffered_run_id"] is None and job["last_triggered_at"] is None
    assert store.runs.count_documents({"job_id": job_id}) == 0


def test_rabbitmq_unreachable_trigger_is_503_and_leaves_nothing_behind(
    proxied: tuple[TcpProxy, FlaskClient], store: MongoStore, settings: Settings
) -> None:
    proxy, client = proxied
    for job_id, policy in (("forbid-job", "forbid"), ("allow-job", "allow"), ("buffer-job", "buffer_one")):
        create_job(client, job_id, overlap_policy=policy)

    # a closed local port: never connected
    for job_id in ("forbid-job", "allow-job", "buffer-job"):
        response, elapsed = timed(lambda job_id=job_id: client.post(f"{BASE}/jobs/{job_id}/trigger"))
        assert_unavailable(response, "rabbitmq_unavailable")
        assert elapsed < ANSWER_WITHIN_S
        assert "guest:guest" not in response.get_json()["error"]["message"]
        assert_nothing_left_behind(store, job_id)
    assert client.get(f"{BASE}/jobs/forbid-job").get_json()["lock_acquired"] is False
    assert client.get("/readyz").get_json()["checks"]["rabbitmq"] != "ok"

    # RabbitMQ comes back: the lease was released, so the next trigger gets it
    proxy.start()
    first = client.post(f"{BASE}/jobs/forbid-job/trigger")
    assert first.status_code == 202 and first.get_json()["lock_acquired"] is True
    assert client.get("/readyz").status_code == 200

    running = client.post(f"{BASE}/jobs/buffer-job/trigger")
    assert running.status_code == 202 and running.get_json()["lock_acquired"] is True

    # it goes away again, cutting the live connection
    proxy.stop()
    create_job(client, "second-job")
    assert_unavailable(client.post(f"{BASE}/jobs/second-job/trigger"), "rabbitmq_unavailable")
    assert_nothing_left_behind(store, "second-job")
    # a buffer_one run that would have waited for the running one: its buffer slot is freed again
    assert_unavailable(client.post(f"{BASE}/jobs/buffer-job/trigger"), "rabbitmq_unavailable")
    buffered = store.jobs.find_one({"_id": "buffer-job"})
    assert buffered["buffered_run_id"] is None and buffered["lease"]["run_id"] == running.get_json()["run_id"]
    assert store.runs.count_documents({"job_id": "buffer-job"}) == 1

    proxy.start()
    second = wait_until_ok(lambda: client.post(f"{BASE}/jobs/second-job/trigger"))
    assert second.status_code == 202 and second.get_json()["lock_acquired"] is True

    accepted = [first.get_json()["run_id"], running.get_json()["run_id"], second.get_json()["run_id"]]
    published = [json.loads(body)["args"][0] for body in services.get_messages(settings.rabbitmq_url, settings.runs_queue)]
    assert published == accepted
    assert {run["_id"]: run["status"] for run in store.runs.find()} == {run_id: "queued" for run_id in accepted}
