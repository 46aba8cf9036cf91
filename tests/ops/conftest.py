"""Real processes for the operability tests (issue 5): ``python -m cronhive.api`` (gunicorn,
two workers), ``python -m cronhive.scheduler`` and ``python -m cronhive.worker --processes 2`` on the
session's MongoDB and the machine's RabbitMQ, each with its own log file; the
RabbitMQ management HTTP API; Prometheus text parsing.

The processes connect to RabbitMQ as users created for the package (through the
management API) with random passwords, so the tests can prove that no password
reaches any process output. The scheduler has a user of its own: revoking its
permissions makes RabbitMQ refuse the scheduler alone (the unpublished backlog
test) without stopping the machine's RabbitMQ.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cronhive.domain import FINAL_RUN_STATUSES
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.services import wait_for
from tests.worker.cluster import consumer_count

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: A run id as `cronhive.domain.new_run_id` and `cronhive.slots.slot_run_id` write them.
RUN_ID = re.compile(r"\brun_\d{8}_\d{6}_[0-9a-f]+\b")

#: Variables of the test session's environment the processes must not inherit.
_OWN_PREFIXES = ("MONGODB_", "RABBITMQ_", "PROMETHEUS_", "dramatiq_", "API_", "METRICS_", "RUNS_QUEUE",
                 "JOB_LEASE_S", "LEADER_LEASE_S", "LOG_LEVEL", "HANDLER_MODULES", "RETRY_BACKOFF_MS")


def base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_OWN_PREFIXES)}
    env["PYTHONPATH"] = str(ROOT)
    return env


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` (an AMQP URL) with ``user:password`` as its credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


# -- processes ----------------------------------------------------------------------


@dataclass
class Proc:
    """One cronhive process (its own session/process group), output in ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """Every output line parsed as JSON (fails naming the first line that is not)."""
        events = []
        for number, line in enumerate(self.lines(), start=1):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"{self.name}: output line {number} is not JSON: {line[:500]!r}") from None
            assert isinstance(event, dict), f"{self.name}: line {number} is not a JSON object: {line[:500]!r}"
            events.append(event)
        return events

    def wait_exit(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def request_stop(self) -> None:
        """SIGTERM to the process itself (gunicorn's and dramatiq's masters stop their
        children gracefully)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 20.0) -> None:
        """`request_stop`, then SIGKILL to the whole group if it does not exit in time."""
        self.request_stop()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # whatever the master left behind
        except ProcessLookupError:
            pass
        if self.alive():
            self.process.wait(10)


def stop_all(procs: list[Proc]) -> None:
    """Ask every process to stop at once, then wait for each."""
    for proc in procs:
        proc.request_stop()
    for proc in procs:
        proc.stop()


def start_process(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    """``python -m <args>`` with exactly ``env`` (plus the test-free base), stdout and stderr to one file."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", f"cronhive.{args[0]}", *args[1:]], cwd=ROOT, env={**base_env(), **env},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(name, process, log_path)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_healthy(proc: Proc, url: str, timeout_s: float = 60.0) -> None:
    def healthy() -> bool:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited ({proc.process.returncode}):\n{proc.output()[-3000:]}")
        return answers(url)

    wait_for(healthy, timeout_s, f"{proc.name} to answer {url}", interval_s=0.1)


# -- metrics ------------------------------------------------------------------------


@dataclass
class Samples:
    """One scrape of a ``/metrics`` page: sample name + labels -> value."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]
    text: str

    @classmethod
    def parse(cls, text: str) -> Samples:
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(values, text)

    def names(self) -> set[str]:
        return {name for name, _ in self.values}

    def get(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, or None."""
        return self.values.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(value for (sample, have), value in self.values.items() if sample == name and wanted <= have)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(have)[label] for (sample, have) in self.values if sample == name and label in dict(have)}


def scrape(url: str) -> Samples:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
    return Samples.parse(response.text)


# -- RabbitMQ management API ----------------------------------------------------------


@dataclass
class Management:
    """The RabbitMQ management HTTP API (the console's backend)."""

    url: str
    auth: tuple[str, str]
    vhost: str = "/"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.url}/api{path}", auth=self.auth, timeout=10, **kwargs)

    def _vhost(self) -> str:
        return quote(self.vhost, safe="")

    def queues(self) -> list[dict[str, Any]]:
        response = self.request("GET", f"/queues/{self._vhost()}")
        response.raise_for_status()
        return response.json()

    def peek(self, queue: str, count: int = 100) -> list[dict[str, Any]]:
        """Up to ``count`` messages of ``queue``, left on it (ackmode ack_requeue_true),
        as the console's "Get messages" shows them (encoding auto)."""
        response = self.request("POST", f"/queues/{self._vhost()}/{quote(queue, safe='')}/get",
                                json={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto",
                                      "truncate": 50000})
        response.raise_for_status()
        return response.json()

    def add_user(self, name: str, password: str) -> None:
        self.request("PUT", f"/users/{quote(name, safe='')}", json={"password": password, "tags": ""}).raise_for_status()
        self.grant(name)

    def grant(self, name: str) -> None:
        self.request("PUT", f"/permissions/{self._vhost()}/{quote(name, safe='')}",
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()

    def revoke(self, name: str) -> None:
        """Take the user's permissions away and close its connections: it can no longer
        open the vhost (its clients see RabbitMQ as unreachable)."""
        self.request("DELETE", f"/permissions/{self._vhost()}/{quote(name, safe='')}").raise_for_status()
        self.request("DELETE", f"/connections/username/{quote(name, safe='')}")

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"/connections/username/{quote(name, safe='')}")
        self.request("DELETE", f"/users/{quote(name, safe='')}")


@pytest.fixture(scope="session")
def management(rabbitmq_url: str) -> Management:
    """The management API of the tests' RabbitMQ (``RABBITMQ_MANAGEMENT_URL``, else port
    15672 on the AMQP host, with the AMQP URL's credentials). Not answering is a
    failure, never a skip: ``.ci/run`` enables the plugin."""
    parts = urlsplit(rabbitmq_url)
    url = os.environ.get("RABBITMQ_MANAGEMENT_URL") or f"http://{parts.hostname or '127.0.0.1'}:15672"
    api = Management(url.rstrip("/"), (parts.username or "guest", parts.password or "guest"),
                     vhost=unquote(parts.path[1:]) or "/")
    try:
        response = api.request("GET", "/overview")
    except requests.RequestException as exc:
        pytest.fail(f"the RabbitMQ management API does not answer at {url} ({type(exc).__name__}); "
                    "enable it: rabbitmq-plugins enable rabbitmq_management (.ci/run does)", pytrace=False)
    if response.status_code != 200:
        pytest.fail(f"the RabbitMQ management API at {url} answered {response.status_code}", pytrace=False)
    return api


# -- the running system ---------------------------------------------------------------


@dataclass
class RabbitUser:
    name: str
    password: str
    url: str


@dataclass
class System:
    """API, scheduler and worker processes on one database and one runs queue."""

    settings: Settings
    store: MongoStore
    management: Management
    api: Proc
    scheduler: Proc
    worker: Proc
    api_url: str
    scheduler_ops: str
    worker_ops: str
    app_user: RabbitUser
    scheduler_user: RabbitUser
    worker_metrics_dir: Path
    run_ids: dict[str, str] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        return self.settings.runs_queue

    @property
    def procs(self) -> list[Proc]:
        return [self.api, self.scheduler, self.worker]

    @property
    def passwords(self) -> list[str]:
        return [self.app_user.password, self.scheduler_user.password]

    def call(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{self.api_url}/api/v1/cron{path}", timeout=10, **kwargs)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response

    def create_job(self, job_id: str, **fields: Any) -> dict[str, Any]:
        body = {"job_id": job_id, "name": job_id, "schedule": "0 0 1 1 *", "handler": "noop", **fields}
        return self.call("POST", "/jobs", 201, json=body).json()

    def trigger(self, job_id: str) -> str:
        return self.call("POST", f"/jobs/{job_id}/trigger", 202).json()["run_id"]

    def set_enabled(self, job_id: str, enabled: bool) -> None:
        self.call("PUT", f"/jobs/{job_id}", 200, json={"enabled": enabled})

    def run(self, run_id: str) -> dict[str, Any]:
        return self.store.runs.find_one({"_id": run_id})

    def wait_run(self, run_id: str, statuses: tuple[str, ...] = FINAL_RUN_STATUSES, timeout_s: float = 15) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.store.runs.find_one({"_id": run_id})
            return run if run and run["status"] in statuses else None

        return wait_for(reached, timeout_s, f"run {run_id} to be {statuses}")

    def wait_quiet(self, timeout_s: float = 15) -> None:
        """No run left pending, queued or running."""
        wait_for(lambda: self.store.runs.count_documents({"status": {"$in": ["pending", "queued", "running"]}}) == 0,
                 timeout_s, "every run to be final")

    def count_runs(self, **query: Any) -> int:
        return self.store.runs.count_documents(query)

    def scrape_api(self) -> Samples:
        return scrape(f"{self.api_url}/metrics")

    def scrape_scheduler(self) -> Samples:
        return scrape(f"{self.scheduler_ops}/metrics")

    def scrape_worker(self) -> Samples:
        return scrape(f"{self.worker_ops}/metrics")


def warm_up(system: System) -> None:
    """Give every series something to count: a job firing every second (until three
    runs succeeded), runs spread over both worker processes, a run that exhausts its
    retries, and missed slots (a job disabled for a few seconds, misfire_policy skip)."""
    system.create_job("tick", schedule="* * * * * *")
    system.create_job("gap", schedule="* * * * * *", misfire_policy="skip")
    system.create_job("spread", handler="sleep", args={"seconds": 0.2}, overlap_policy="allow", enabled=False)
    system.create_job("boom", handler="fail", args={"message": "disk full"}, max_retries=1, enabled=False)
    system.run_ids["boom"] = system.trigger("boom")
    spread = [system.trigger("spread") for _ in range(6)]
    wait_for(lambda: system.count_runs(job_id="gap", trigger="schedule"), 10, "the gap job's first run")
    system.set_enabled("gap", False)  # re-enabled below: the slots in between were missed
    disabled_at = time.monotonic()
    wait_for(lambda: system.count_runs(job_id="tick", status="succeeded") >= 3, 20, "three tick runs to succeed")
    time.sleep(max(0.0, 2.5 - (time.monotonic() - disabled_at)))
    system.set_enabled("gap", True)
    wait_for(lambda: system.count_runs(job_id="gap", status="skipped"), 10, "the gap job's missed slots")
    for job_id in ("tick", "gap"):
        system.set_enabled(job_id, False)
    for run_id in [system.run_ids["boom"], *spread]:
        system.wait_run(run_id)
    system.wait_quiet()


@pytest.fixture(scope="package")
def system(mongodb_uri: str, rabbitmq_url: str, management: Management,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tag = uuid.uuid4().hex[:10]
    logs = tmp_path_factory.mktemp("ops-system")
    app_user = RabbitUser(f"cronhive_ops_{tag}", f"pw-app-{secrets.token_hex(12)}", "")
    scheduler_user = RabbitUser(f"cronhive_ops_sched_{tag}", f"pw-sched-{secrets.token_hex(12)}", "")
    for user in (app_user, scheduler_user):
        user.url = with_credentials(rabbitmq_url, user.name, user.password)
    env = {
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"cronhive_ops_{tag}",
        "MONGODB_TIMEOUT_MS": "2000",
        "RABBITMQ_URL": app_user.url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "JOB_LEASE_S": "3",
        "LEADER_LEASE_S": "3",
        "RETRY_BACKOFF_MS": "200",
        "LOG_LEVEL": "INFO",
    }
    settings = Settings.from_env(env)
    api_port, scheduler_port, worker_port = services.free_port(), services.free_port(), services.free_port()
    api_metrics, worker_metrics = logs / "api-metrics", logs / "worker-metrics"
    api_metrics.mkdir()
    worker_metrics.mkdir()
    store = MongoStore.open(settings)
    store.ensure_indexes()
    procs: list[Proc] = []
    try:
        for user in (app_user, scheduler_user):
            management.add_user(user.name, user.password)
        api = start_process("api", ["api"], {**env, "API_HOST": "127.0.0.1", "API_PORT": str(api_port),
                                              "API_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(api_metrics)}, logs)
        procs.append(api)
        scheduler = start_process("scheduler", ["scheduler"], {**env, "RABBITMQ_URL": scheduler_user.url,
                                                               "METRICS_PORT": str(scheduler_port)}, logs)
        procs.append(scheduler)
        worker = start_process("worker", ["worker", "--processes", "2", "--threads", "1"],
                               {**env, "METRICS_PORT": str(worker_port),
                                "PROMETHEUS_MULTIPROC_DIR": str(worker_metrics)}, logs)
        procs.append(worker)
        system = System(settings, store, management, api, scheduler, worker, f"http://127.0.0.1:{api_port}",
                        f"http://127.0.0.1:{scheduler_port}", f"http://127.0.0.1:{worker_port}", app_user,
                        scheduler_user, worker_metrics)
        wait_healthy(api, f"{system.api_url}/healthz")
        wait_healthy(scheduler, f"{system.scheduler_ops}/healthz")
        wait_healthy(worker, f"{system.worker_ops}/healthz")
        # both worker processes consume before anything is published (the runs spread over both)
        wait_for(lambda: consumer_count(rabbitmq_url, settings.runs_queue) >= 2, 30, "two consumers on the runs queue")
        warm_up(system)
        yield system
    finally:
        stop_all(procs[::-1])
        store.client.drop_database(settings.mongodb_db)
        store.close()
        queue = settings.runs_queue
        services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")
        for user in (app_user, scheduler_user):
            management.delete_user(user.name)
