"""``/readyz`` follows MongoDB: 503 while it is stopped, 200 once it is back — on
the API and on the scheduler's and worker's metrics ports. MongoDB here is a
SecantusDB server of the test's own (fixed port and data directory), stopped and
started again on the same port and directory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cronhive.api.app import close_app, create_app
from cronhive.settings import Settings
from tests import services
from tests.ops.conftest import Proc, start_process, stop_all, wait_for, wait_healthy

pytestmark = pytest.mark.slow


@pytest.fixture
def own_mongodb(tmp_path: Path) -> Iterator[services.SecantusServer]:
    server = services.SecantusServer(port=services.free_port(), data_dir=str(tmp_path / "mongodb")).start()
    try:
        yield server
    finally:
        server.stop()


def readiness(url: str) -> tuple[int, dict[str, str]]:
    response = requests.get(url, timeout=10)
    return response.status_code, response.json()["checks"]


def test_readyz_turns_503_while_mongodb_is_stopped_and_200_when_it_returns(
    own_mongodb: services.SecantusServer, rabbitmq_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    env = {
        "MONGODB_URI": own_mongodb.uri,
        "MONGODB_DB": f"cronhive_ops_ready_{tag}",
        "MONGODB_TIMEOUT_MS": "500",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "JOB_LEASE_S": "3",
        "LEADER_LEASE_S": "3",
        "LOG_LEVEL": "INFO",
    }
    ports = {"scheduler": services.free_port(), "worker": services.free_port()}
    metrics_dir = tmp_path / "worker-metrics"
    metrics_dir.mkdir()
    procs: list[Proc] = [
        start_process("scheduler", ["scheduler"], {**env, "METRICS_PORT": str(ports["scheduler"])}, tmp_path),
        start_process("worker", ["worker", "--processes", "1", "--threads", "1"],
                      {**env, "METRICS_PORT": str(ports["worker"]),
                       "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, tmp_path),
    ]
    app = create_app(Settings.from_env(env))
    client = app.test_client()

    def api() -> tuple[int, dict[str, str]]:
        response = client.get("/readyz")
        return response.status_code, response.get_json()["checks"]

    probes = {"api": api}
    for proc in procs:
        url = f"http://127.0.0.1:{ports[proc.name]}"
        probes[proc.name] = lambda url=url: readiness(f"{url}/readyz")
    try:
        for proc in procs:
            wait_healthy(proc, f"http://127.0.0.1:{ports[proc.name]}/healthz")
        for name, probe in probes.items():
            assert probe() == (200, {"mongodb": "ok", "rabbitmq": "ok"}), name

        own_mongodb.stop()
        for name, probe in probes.items():
            _status, checks = wait_for(lambda probe=probe: (result := probe())[0] == 503 and result, 15,
                                      f"{name} /readyz to turn 503")
            assert "MongoDB is unreachable" in checks["mongodb"] and checks["rabbitmq"] == "ok", (name, checks)
        assert client.get("/healthz").status_code == 200  # alive, just not ready
        for proc in procs:
            assert proc.alive(), proc.output()[-2000:]  # they ride the outage out
            assert requests.get(f"http://127.0.0.1:{ports[proc.name]}/healthz", timeout=5).status_code == 200

        own_mongodb.start()  # same port, same data directory
        for name, probe in probes.items():
            wait_for(lambda probe=probe: probe() == (200, {"mongodb": "ok", "rabbitmq": "ok"}), 20,
                     f"{name} /readyz to turn 200 again")
        created = client.post("/api/v1/cron/jobs", json={"job_id": "after", "name": "after", "schedule": "0 3 * * *",
                                                          "handler": "noop"})
        assert created.status_code == 201, created.get_json()
    finally:
        close_app(app)
        stop_all(procs)
        services.delete_queues(rabbitmq_url, env["RUNS_QUEUE"], f"{env['RUNS_QUEUE']}.DQ", f"{env['RUNS_QUEUE']}.XQ")
