"""``cronhive up`` supervises its cluster: real processes, SIGKILLed.

Every cluster here has its own API port, embedded MongoDB (SecantusDB on a free
port, data in the test's directory), runs queue and no metrics ports, so it runs
beside any other. The backoff is checked on real short-lived processes with a
moved clock (`Supervisor` takes the clock), not by sleeping through it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cronhive.cli.up import (
    INITIAL_BACKOFF_S,
    MAX_BACKOFF_S,
    STABLE_AFTER_S,
    ChildSpec,
    Supervisor,
    describe_exit,
    restart_delay,
)
from tests import services
from tests.cli.conftest import CLIENT_ENV, CRONHIVE, REPO

START_TIMEOUT_S = 90.0
API = "/api/v1/cron"


# -- the backoff ----------------------------------------------------------------


def test_restart_delay_doubles_to_the_cap_and_resets_after_a_stable_run() -> None:
    delays = []
    previous = None
    for _ in range(8):
        previous = restart_delay(previous, uptime_s=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert INITIAL_BACKOFF_S == 1 and MAX_BACKOFF_S == 30
    assert restart_delay(30, uptime_s=STABLE_AFTER_S) == INITIAL_BACKOFF_S
    assert restart_delay(30, uptime_s=STABLE_AFTER_S - 1) == 30


def test_describe_exit_names_the_signal() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"


class MovedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_exited(supervisor: Supervisor) -> None:
    for child in supervisor.children:
        child.process.wait(10)


def test_supervisor_restarts_a_crashing_process_with_backoff(tmp_path: Path) -> None:
    """A process that exits at once is restarted after 1, 2, 4 ... s of the clock, never sooner."""
    marker = tmp_path / "starts"
    script = f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"
    clock = MovedClock()
    supervisor = Supervisor(restart=True, clock=clock)
    supervisor.start(ChildSpec("crasher", (sys.executable, "-c", script), dict(os.environ)))
    try:
        for expected_delay in (1, 2, 4, 8):
            wait_exited(supervisor)
            supervisor.poll()  # notices the exit, schedules the restart
            child = supervisor.children[0]
            assert child.backoff_s == expected_delay
            starts = marker.read_text().count("x")
            clock.now += expected_delay - 0.1
            supervisor.poll()
            assert marker.read_text().count("x") == starts  # not restarted before its delay
            clock.now += 0.1
            supervisor.poll()  # restarts it
            wait_exited(supervisor)
            assert marker.read_text().count("x") == starts + 1
        # a run that stayed up long enough starts the backoff over
        clock.now += STABLE_AFTER_S
        supervisor.poll()
        assert supervisor.children[0].backoff_s == INITIAL_BACKOFF_S
        assert supervisor.children[0].restarts == 4
    finally:
        supervisor.stop()


def test_supervisor_without_restart_leaves_the_process_dead(tmp_path: Path) -> None:
    clock = MovedClock()
    supervisor = Supervisor(restart=False, clock=clock)
    supervisor.start(ChildSpec("crasher", (sys.executable, "-c", "raise SystemExit(4)"), dict(os.environ)))
    try:
        wait_exited(supervisor)
        for _ in range(3):
            supervisor.poll()
            clock.now += 100
        child = supervisor.children[0]
        assert child.reported and child.restarts == 0 and child.restart_at is None
    finally:
        supervisor.stop()


def test_supervisor_kills_what_is_left_of_the_dead_process_group(tmp_path: Path) -> None:
    """A child's own child (a gunicorn or dramatiq worker) dies with it, so a restart can bind its port."""
    pid_file = tmp_path / "grandchild"
    script = ("import subprocess, sys, time; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); raise SystemExit(1)")
    supervisor = Supervisor(restart=True, clock=MovedClock())
    supervisor.start(ChildSpec("parent", (sys.executable, "-c", script), dict(os.environ)))
    try:
        wait_exited(supervisor)
        grandchild = int(services.wait_for(lambda: pid_file.exists() and pid_file.read_text(), 10, "the grandchild"))
        assert process_alive(grandchild)
        supervisor.poll()
        services.wait_for(lambda: not process_alive(grandchild), 10, "the grandchild to be killed")
    finally:
        supervisor.stop()


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


# -- the cluster ----------------------------------------------------------------


@dataclass
class UpCluster:
    process: subprocess.Popen[bytes]
    log_path: Path
    api_url: str
    runs_queue: str

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def messages(self, logger: str = "cronhive.up") -> list[str]:
        return [str(event.get("event")) for event in self.events() if event.get("logger") == logger]

    def pid_of(self, name: str) -> int:
        """The pid of ``name``'s latest incarnation, from up's own log lines."""
        pid = None
        for message in self.messages():
            for prefix in (f"started {name} (pid ", f"restarted {name} (pid "):
                if message.startswith(prefix):
                    pid = int(message[len(prefix):].split(")")[0].split(",")[0])
        assert pid is not None, f"no pid logged for {name}"
        return pid

    def worker_ready(self, dramatiq_pid: int) -> bool:
        return any(event.get("logger") == "cronhive.worker" and str(event.get("worker", "")).endswith(f":{dramatiq_pid}")
                   and str(event.get("event", "")).startswith("worker ready") for event in self.events())

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_url}{API}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")
        except OSError:
            return 0, None

    def dramatiq_child(self, worker: str) -> int:
        """The dramatiq worker process of ``worker`` once it consumes."""
        pid = self.pid_of(worker)

        def ready() -> int | None:
            children = children_of(pid)
            return children[0] if children and self.worker_ready(children[0]) else None

        return int(services.wait_for(ready, START_TIMEOUT_S, f"{worker}'s dramatiq process"))


def start_up(tmp_path: Path, rabbitmq_url: str, *args: str) -> UpCluster:
    tag = uuid.uuid4().hex[:10]
    api_port = services.free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in CLIENT_ENV and not key.startswith(("MONGODB_", "PROMETHEUS_"))}
    env.update({
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "EMBEDDED_MONGODB_PORT": str(services.free_port()),
        "DATA_DIR": str(tmp_path / "data"),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(api_port),
        "API_WORKERS": "1",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
        "RETRY_BACKOFF_MS": "200",
    })
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen([str(CRONHIVE), "up", *args], env=env, cwd=REPO, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    cluster = UpCluster(process, log_path, f"http://127.0.0.1:{api_port}", env["RUNS_QUEUE"])
    try:
        services.wait_for(lambda: process.poll() is not None or cluster.call("GET", "/jobs")[0] == 200,
                          START_TIMEOUT_S, "the API under cronhive up")
        assert process.poll() is None, log_path.read_text()[-3000:]
    except BaseException:
        stop_up(cluster)
        raise
    return cluster


def stop_up(cluster: UpCluster) -> None:
    if cluster.process.poll() is None:
        cluster.process.send_signal(signal.SIGTERM)
        try:
            cluster.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.process.pid, signal.SIGKILL)
            cluster.process.wait()


@pytest.fixture
def up_cluster(request: pytest.FixtureRequest, tmp_path: Path, rabbitmq_url: str) -> Iterator[UpCluster]:
    args = getattr(request, "param", ())
    cluster = start_up(tmp_path, rabbitmq_url, *args)
    try:
        yield cluster
    finally:
        stop_up(cluster)
        services.delete_queues(rabbitmq_url, cluster.runs_queue, f"{cluster.runs_queue}.DQ",
                               f"{cluster.runs_queue}.XQ")


def run_on(cluster: UpCluster, wanted_pid: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Trigger jobs until one run succeeds in the dramatiq process ``wanted_pid``; that run."""
    host = socket.gethostname()
    triggered: list[str] = []

    def done_there() -> dict[str, Any] | None:
        job_id = f"up-{uuid.uuid4().hex[:8]}"
        status, _ = cluster.call("POST", "/jobs", {"job_id": job_id, "name": job_id, "schedule": "0 0 1 1 *",
                                                  "handler": "sleep", "args": {"seconds": 0.2}})
        assert status == 201
        status, body = cluster.call("POST", f"/jobs/{job_id}/trigger")
        assert status == 202, body
        triggered.append(body["run_id"])
        for run_id in triggered:
            status, run = cluster.call("GET", f"/runs/{run_id}")
            if status == 200 and run["status"] == "succeeded" and run["worker"] == f"{host}:{wanted_pid}":
                return dict(run)
        return None

    return services.wait_for(done_there, timeout_s, f"a run executed by pid {wanted_pid}", interval_s=0.5)


def test_a_killed_worker_process_comes_back_and_runs_jobs(up_cluster: UpCluster) -> None:
    worker = up_cluster.pid_of("worker-1")
    dramatiq_child = up_cluster.dramatiq_child("worker-1")

    os.kill(dramatiq_child, signal.SIGKILL)  # dramatiq's main process then shuts the whole worker down

    services.wait_for(lambda: any(m.startswith("restarted worker-1 (pid ") for m in up_cluster.messages()),
                      60, "worker-1 to be restarted")
    exits = [m for m in up_cluster.messages() if m.startswith(f"worker-1 (pid {worker}) ")]
    assert len(exits) == 1 and "restarting it in 1 s" in exits[0], exits
    assert up_cluster.pid_of("worker-1") != worker
    new_child = up_cluster.dramatiq_child("worker-1")
    assert new_child != dramatiq_child
    run = run_on(up_cluster, new_child)
    assert run["status"] == "succeeded"
    assert not process_alive(worker) and not process_alive(dramatiq_child)


@pytest.mark.parametrize("up_cluster", [("--no-restart",)], indirect=True)
def test_no_restart_leaves_a_killed_worker_dead(up_cluster: UpCluster) -> None:
    worker = up_cluster.pid_of("worker-1")
    dramatiq_child = up_cluster.dramatiq_child("worker-1")
    survivor = up_cluster.dramatiq_child("worker-2")

    os.kill(dramatiq_child, signal.SIGKILL)

    services.wait_for(lambda: any("not restarted (--no-restart)" in m for m in up_cluster.messages()), 60,
                      "the exit of worker-1 to be reported")
    run = run_on(up_cluster, survivor)  # the rest of the cluster keeps working meanwhile
    assert run["status"] == "succeeded"
    assert not process_alive(worker)
    assert not any(m.startswith("restarted ") for m in up_cluster.messages())
    assert up_cluster.process.poll() is None


def test_a_killed_embedded_mongodb_comes_back_with_its_data(up_cluster: UpCluster) -> None:
    job_id = f"durable-{uuid.uuid4().hex[:8]}"
    status, _ = up_cluster.call("POST", "/jobs", {"job_id": job_id, "name": "survives", "schedule": "0 0 1 1 *",
                                                  "handler": "noop"})
    assert status == 201
    mongodb = up_cluster.pid_of("mongodb (embedded SecantusDB)")

    os.kill(mongodb, signal.SIGKILL)

    services.wait_for(lambda: any(m.startswith("restarted mongodb") for m in up_cluster.messages()), 60,
                      "the embedded MongoDB to be restarted")
    services.wait_for(lambda: up_cluster.call("GET", f"/jobs/{job_id}")[0] == 200, 60,
                      "the API to serve the job again")
    status, body = up_cluster.call("POST", f"/jobs/{job_id}/trigger")
    assert status == 202, body

    def succeeded() -> bool:
        return up_cluster.call("GET", f"/runs/{body['run_id']}")[1].get("status") == "succeeded"

    services.wait_for(succeeded, 90, "the triggered run to succeed after the restart", interval_s=0.5)
