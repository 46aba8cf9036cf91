"""A whole cronhive cluster of real processes for the chaos suite, and the faults
it injects.

`ChaosCluster` owns: a SecantusDB server (its own port and data directory, so it
can be SIGKILLed and started again), a RabbitMQ vhost of its own (so dropping
its connections touches no other test), the API (gunicorn), schedulers and
workers (``HANDLER_MODULES=tests.chaos.handlers``). A supervisor thread restarts
a scheduler or worker that exited, as Kubernetes or ``cronhive up`` would.
`ApiLoad` sends a mix of reads and writes throughout and keeps every answer.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from cronhive.domain import utcnow
from cronhive.settings import Settings
from cronhive.store import LEADER_LEASE_ID, MongoStore
from tests import services

ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v1/cron"
management = services.management
rabbitmqctl = services.rabbitmqctl


@dataclass
class Proc:
    role: str
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: the supervisor leaves it down while set (a test's deliberate stop)
    held: bool = False

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=log,
                                            start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_tree(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal_tree(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(15)

    def request_stop(self) -> None:
        """SIGCONT (a paused one too) and SIGTERM: a graceful stop, not waited for."""
        if not self.alive():
            return
        assert self.process is not None
        self.signal_tree(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        """Wait for the exit until ``deadline`` (time.monotonic()), then SIGKILL."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_together([self], timeout_s)

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"raw": line}
            found.append(event if isinstance(event, dict) else {"raw": line})
        return found


def stop_together(procs: list[Proc], timeout_s: float = 20.0) -> None:
    """Stop ``procs`` gracefully in parallel (one shared grace), SIGKILL what is left."""
    for proc in procs:
        proc.request_stop()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        proc.wait_stopped(deadline)


@dataclass
class Fault:
    """A fault window, for the audit: what, when it began and when it was over."""

    kind: str
    start: datetime
    end: datetime | None = None


@dataclass
class ChaosCluster:
    tmp: Path
    schedulers: int = 2
    workers: int = 2
    worker_threads: int = 2
    env_extra: dict[str, str] = field(default_factory=dict)
    #: extra environment of one scheduler, by index (e.g. a skewed clock)
    scheduler_env: dict[int, dict[str, str]] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.vhost = f"cronhive-chaos-{self.tag}"
        self.exec_dir = self.tmp / "exec"
        self.exec_dir.mkdir(parents=True, exist_ok=True)
        self.mongo = services.SecantusServer(data_dir=str(self.tmp / "mongodb"))
        self.api_port = services.free_port()
        self._supervising = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- set up and tear down -----------------------------------------------------

    @property
    def rabbitmq_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{quote(self.vhost, safe='')}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("MONGODB_", "RABBITMQ_", "API_", "PROMETHEUS_"))}
        env.update({
            "MONGODB_URI": self.mongo.uri, "MONGODB_DB": "cronhive", "MONGODB_TIMEOUT_MS": "1000",
            "RABBITMQ_URL": self.rabbitmq_url, "RUNS_QUEUE": "cronhive.runs",
            "API_HOST": "127.0.0.1", "API_PORT": str(self.api_port), "API_WORKERS": "2",
            "LEADER_LEASE_S": "3", "JOB_LEASE_S": "3", "RETRY_BACKOFF_MS": "300", "METRICS_PORT": "0",
            "LOG_LEVEL": "INFO", "HANDLER_MODULES": "tests.chaos.handlers", "CHAOS_EXEC_DIR": str(self.exec_dir),
            "PYTHONPATH": str(ROOT), **self.env_extra,
        })
        return env

    def settings(self) -> Settings:
        env = self.env()
        return Settings.from_env({k: v for k, v in env.items() if k.startswith(("MONGODB_", "RABBITMQ_", "RUNS_"))})

    def start(self) -> ChaosCluster:
        self.mongo.start()
        management("PUT", f"/vhosts/{quote(self.vhost, safe='')}", {})
        management("PUT", f"/permissions/{quote(self.vhost, safe='')}/guest",
                   {"configure": ".*", "write": ".*", "read": ".*"})
        self.store = MongoStore.open(self.settings())
        self.store.ensure_indexes()
        python = sys.executable
        self._add("api", "api", [python, "-m", "cronhive.api"])
        for index in range(self.schedulers):
            self._add("scheduler", f"scheduler-{index}", [python, "-m", "cronhive.scheduler"],
                      self.scheduler_env.get(index, {}))
        for index in range(self.workers):
            metrics = self.tmp / f"metrics-worker-{index}"
            metrics.mkdir(exist_ok=True)
            self._add("worker", f"worker-{index}", [python, "-m", "cronhive.worker", "--processes", "1",
                                                    "--threads", str(self.worker_threads)],
                      {"PROMETHEUS_MULTIPROC_DIR": str(metrics)})
        for proc in self.procs:
            proc.start()
        services.wait_for(self._api_answers, 60, "the API to answer")
        services.wait_for(lambda: self.consumers() >= self.workers, 60, f"{self.workers} consumers")
        services.wait_for(lambda: self.leader_pid() is not None, 30, "a leader")
        self._supervising.set()
        self._supervisor = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def _add(self, role: str, name: str, argv: list[str], extra: dict[str, str] | None = None) -> Proc:
        proc = Proc(role, name, argv, {**self.env(), **(extra or {})}, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def _api_answers(self) -> bool:
        try:
            return requests.get(self.api_url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _supervise(self) -> None:
        while self._supervising.is_set():
            with self._lock:
                for proc in self.procs:
                    if proc.role != "api" and not proc.held and proc.process is not None \
                            and proc.process.poll() is not None:
                        proc.restarts += 1
                        proc.start()
            time.sleep(0.5)

    def stop_schedulers(self) -> None:
        with self._lock:
            for proc in self.of_role("scheduler"):
                proc.held = True
        stop_together(self.of_role("scheduler"))

    def stop(self) -> None:
        """Every process at once (the audit is done): graceful, SIGKILL after the grace."""
        self._supervising.clear()
        if self._supervisor is not None:
            self._supervisor.join(5)
        stop_together([proc for role in ("scheduler", "worker", "api") for proc in self.of_role(role)])
        try:
            self.store.close()
        except Exception:
            pass
        self.mongo.cleanup()
        try:
            management("DELETE", f"/vhosts/{quote(self.vhost, safe='')}")
        except Exception:
            pass

    # -- looking -------------------------------------------------------------------

    def of_role(self, role: str) -> list[Proc]:
        return [proc for proc in self.procs if proc.role == role]

    def consumers(self) -> int:
        try:
            queue = management("GET", f"/queues/{quote(self.vhost, safe='')}/cronhive.runs")
        except Exception:
            return 0
        return int(queue.get("consumers") or 0)

    def leader_pid(self) -> int | None:
        try:
            doc = self.store.leases.find_one({"_id": LEADER_LEASE_ID})
        except Exception:
            return None
        lease = (doc or {}).get("lease")
        if not lease or lease["expires_at"] <= utcnow():
            return None
        return int(lease["holder"].rsplit(":", 1)[1])

    def leader(self, other_than: int | None = None, timeout_s: float = 30) -> Proc:
        def find() -> Proc | None:
            pid = self.leader_pid()
            if pid is None or pid == other_than:
                return None
            return next((p for p in self.of_role("scheduler") if p.process and p.pid == pid), None)

        return services.wait_for(find, timeout_s, "a leader" + (f" other than {other_than}" if other_than else ""),
                                 interval_s=0.05)

    def worker_running(self, run_id: str, timeout_s: float = 30) -> Proc:
        """The worker tree executing ``run_id`` (from the run's ``worker`` = hostname:pid)."""

        def find() -> Proc | None:
            run = self.store.runs.find_one({"_id": run_id}, {"status": 1, "worker": 1})
            if not run or run.get("status") != "running" or not run.get("worker"):
                return None
            pid = int(run["worker"].rsplit(":", 1)[1])
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                return None
            return next((p for p in self.of_role("worker") if p.process and p.pid == group), None)

        return services.wait_for(find, timeout_s, f"a worker running {run_id}", interval_s=0.05)

    # -- faults --------------------------------------------------------------------

    @contextmanager
    def fault(self, kind: str) -> Iterator[Fault]:
        fault = Fault(kind, utcnow())
        self.faults.append(fault)
        try:
            yield fault
        finally:
            fault.end = utcnow()

    def kill_mongodb_for(self, seconds: float) -> None:
        with self.fault("mongodb_down"):
            self.mongo.kill()
            time.sleep(seconds)
            self.mongo.start()

    def kill_leader(self) -> tuple[int, float]:
        """SIGKILL the leader; returns its pid and seconds until another one held the lease."""
        leader = self.leader()
        with self.fault("leader_killed"):
            killed_at = time.monotonic()
            leader.kill()
            self.leader(other_than=leader.pid)
            return leader.pid, time.monotonic() - killed_at

    def pause_leader(self, seconds: float) -> int:
        """SIGSTOP the leader for ``seconds`` (past its lease), then SIGCONT."""
        leader = self.leader()
        with self.fault("leader_paused"):
            leader.signal_tree(signal.SIGSTOP)
            time.sleep(seconds)
            leader.signal_tree(signal.SIGCONT)
        return leader.pid

    def drop_rabbitmq_connections(self) -> None:
        with self.fault("rabbitmq_connections_dropped"):
            rabbitmqctl("close_all_connections", "-p", self.vhost, "chaos: connection dropped")

    def restart_rabbitmq(self) -> None:
        """Stop and start the RabbitMQ node: only in `make chaos` (it is the machine's)."""
        with self.fault("rabbitmq_restarted"):
            try:
                rabbitmqctl("stop_app")
                time.sleep(2)
            finally:
                rabbitmqctl("start_app")
                rabbitmqctl("await_startup", "--timeout", "120")


@dataclass
class Answer:
    at: datetime
    method: str
    path: str
    status: int | None
    shaped: bool
    error: str | None = None


class ApiLoad:
    """Mixed API requests from a few threads until stopped; every answer kept."""

    def __init__(self, api_url: str, watched_job_ids: list[str], threads: int = 2, pause_s: float = 0.05,
                 probed_job_ids: list[str] | None = None) -> None:
        self.api_url = api_url
        self.watched = watched_job_ids
        #: jobs the load also triggers, updates in part and views on the dashboard
        #: (e.g. corrupt ones, which must answer 409/422/200, never a 5xx); the list may grow
        self.probed = probed_job_ids if probed_job_ids is not None else []
        self.threads = threads
        self.pause_s = pause_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> ApiLoad:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending (idempotent); every answer so far is kept."""
        self._stop.set()
        for thread in self._workers:
            thread.join(30)

    def _call(self, session: requests.Session, method: str, path: str, body: Any = None, *,
              page: bool = False) -> Any:
        """One request to ``BASE + path`` (``page``: to the dashboard's ``path``, which answers
        HTML while it works); its answer is kept."""
        at = utcnow()
        try:
            response = session.request(method, self.api_url + (path if page else BASE + path), json=body,
                                       timeout=15)
        except requests.RequestException as exc:
            self._keep(Answer(at, method, path, None, False, f"{type(exc).__name__}: {exc}"[:300]))
            return None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        error_shaped = isinstance(payload, dict) and (response.status_code < 400 or (
            set(payload) >= {"error"} and set(payload["error"]) == {"code", "message", "details"}))
        shaped = (page and response.status_code < 400) or error_shaped
        self._keep(Answer(at, method, path, response.status_code, shaped))
        return payload if response.status_code < 300 else None

    def _probe(self, session: requests.Session, rng: random.Random, job_id: str) -> None:
        what = rng.random()
        if what < 0.25:
            self._call(session, "GET", f"/jobs/{job_id}")
        elif what < 0.4:
            self._call(session, "POST", f"/jobs/{job_id}/trigger")
        elif what < 0.55:
            self._call(session, "PUT", f"/jobs/{job_id}", {"max_retries": rng.randrange(3)})
        elif what < 0.7:
            self._call(session, "GET", f"/jobs/{job_id}/runs?limit=5")
        elif what < 0.85:
            self._call(session, "GET", f"/ui/jobs/{job_id}", page=True)
        else:
            self._call(session, "GET", "/ui/", page=True)

    def _keep(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        session = requests.Session()
        own: list[str] = []
        count = 0
        while not self._stop.is_set():
            count += 1
            choice = rng.random()
            if self.probed and rng.random() < 0.3:
                self._probe(session, rng, rng.choice(self.probed))
            elif choice < 0.3:
                self._call(session, "GET", f"/jobs?page=1&limit={rng.choice([5, 20, 50])}")
            elif choice < 0.45 and self.watched:
                job_id = rng.choice(self.watched)
                self._call(session, "GET", f"/jobs/{job_id}")
                self._call(session, "GET", f"/jobs/{job_id}/runs?limit=5")
            elif choice < 0.55:
                self._call(session, "GET", "/scheduler")
            elif choice < 0.7:
                created = self._call(session, "POST", "/jobs", {
                    "name": f"load {index}-{count}", "job_id": f"load_{index}_{count}", "schedule": "0 0 1 1 *",
                    "handler": "noop", "overlap_policy": rng.choice(["forbid", "allow"])})
                if created:
                    own.append(created["job_id"])
            elif choice < 0.8 and own:
                self._call(session, "PUT", f"/jobs/{rng.choice(own)}", {"enabled": rng.random() < 0.5})
            elif choice < 0.9 and own:
                triggered = self._call(session, "POST", f"/jobs/{rng.choice(own)}/trigger")
                if triggered:
                    self._call(session, "GET", f"/runs/{triggered['run_id']}")
            elif own:
                self._call(session, "DELETE", f"/jobs/{own.pop(rng.randrange(len(own)))}")
            self._stop.wait(self.pause_s)
