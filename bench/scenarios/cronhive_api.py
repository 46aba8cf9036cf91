"""cronhive's REST API under load, with the cluster running (issue 14).

The cluster is the one ``cronhive up`` runs: ``python -m cronhive.api`` (gunicorn,
the product's settings), two schedulers and two workers (1 process × 4 threads
each), on the run's SecantusDB and RabbitMQ, with a database and runs queue of
its own. ``profile.api_jobs`` jobs are loaded first (their yearly schedule does
not fire during the run) plus `BACKGROUND_JOBS` jobs firing every 10 s, so the
scheduler and the workers are busy beside the API.

``profile.api_clients`` clients (threads of the harness, each with its own
keep-alive HTTP connection) send requests back to back — a closed loop, so the
figures are the API's capacity at that concurrency — in a fixed mix (`MIX`):
list a page of jobs, get a job, list a job's runs, create, update, trigger and
delete a job. Writes go to each client's own jobs (no 404 races); reads to the
loaded jobs and the client's own. After ``api_warmup_s``, every request started
in the next ``api_duration_s`` is measured, from sending to its answer read.

Before the load, ``solo`` measures each endpoint alone: `SOLO_REQUESTS`
sequential requests of one client, their mean latency and the CPU milliseconds
the API and the store (SecantusDB, background subtracted) spent per request —
which side bounds the mix, and which endpoint costs what.

Results (``api``): ``requests_per_s`` and ``latency_ms`` {p50, p99, max} over all
requests, the same per endpoint (``endpoints``), the answers' status codes, the
count of 5xx and of unexpected statuses (anything but the endpoint's success
code, and 409 for a trigger refused by the job's lease), the CPU seconds each
side used in the window (API, SecantusDB, schedulers, workers, the harness's
clients), and the gunicorn configuration measured (``server``).

``BENCH_API_ARGS`` (extra gunicorn arguments, e.g. ``--worker-class sync
--workers 4``) and ``BENCH_API_WORKERS`` (``API_WORKERS``) measure another
configuration than the product's; ``BENCH_API_MIX`` (``get=40,create=30,...``)
another mix (e.g. one without the store's scanning queries, to measure the API
layer itself).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import resource
import shlex
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import Managed, ProcessGroup
from bench.profiles import Profile
from bench.scenarios.cronhive_cluster import CronhiveCluster, proc_cpu_s, wait_until
from bench.services import Services
from bench.stats import summary_ms
from tests.services import free_port

log = logging.getLogger("bench.cronhive.api")

ENDPOINTS = ("list", "get", "runs", "create", "update", "trigger", "delete")
#: relative weights of the endpoints in the mix (reads 65 %, writes 35 %)
MIX = {"list": 25, "get": 25, "runs": 15, "create": 10, "update": 10, "trigger": 7, "delete": 8}
#: the status each endpoint answers when it did what was asked (a trigger may also be refused: 409)
EXPECTED = {"list": {200}, "get": {200}, "runs": {200}, "create": {201}, "update": {200}, "trigger": {202, 409},
            "delete": {200}}
BACKGROUND_JOBS = 20
BASE = "/api/v1/cron"
READY_TIMEOUT_S = 90.0
HTTP_TIMEOUT_S = 60.0
SCHEDULES = ("0 0 1 1 *", "0 0 2 1 *", "30 4 1 1 *")
#: the sequential cost phase: requests per endpoint, and the store's idle reading before it
SOLO_REQUESTS = 60
SOLO_IDLE_S = 2.0


def job_id(index: int) -> str:
    return f"api_{index:05d}"


@dataclass
class Sample:
    endpoint: str
    latency_ms: float
    status: int


@dataclass
class Client:
    """One closed-loop client: its connection, its own jobs, what it measured."""

    index: int
    host: str
    port: int
    loaded: list[str]
    background: list[str]
    measure_from: float
    measure_until: float
    mix: dict[str, int] = field(default_factory=lambda: dict(MIX))
    rng: random.Random = field(init=False)
    own: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    reconnects: int = 0
    failures: list[str] = field(default_factory=list)
    created: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(1400 + self.index)
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)

    def run(self) -> None:
        endpoints, weights = list(self.mix), list(self.mix.values())
        try:
            while (started := time.monotonic()) < self.measure_until:
                endpoint, method, path, body = self.plan(self.rng.choices(endpoints, weights)[0])
                status, answer = self.send(method, path, body)
                latency_ms = (time.monotonic() - started) * 1000
                self.learn(endpoint, path, status, answer)
                if started >= self.measure_from:
                    self.samples.append(Sample(endpoint, latency_ms, status))
        except Exception as exc:  # reported, never hidden: the section then says how many clients failed
            self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.connection.close()

    def plan(self, endpoint: str) -> tuple[str, str, str, dict[str, Any] | None]:
        """(endpoint, method, path, body) of the next request; a write with no job of
        this client's to act on becomes a create."""
        rng = self.rng
        if endpoint == "list":
            return endpoint, "GET", f"{BASE}/jobs?page={rng.randint(1, 10)}&limit=20", None
        if endpoint == "get":
            pool = self.own if self.own and rng.random() < 0.3 else self.loaded
            return endpoint, "GET", f"{BASE}/jobs/{rng.choice(pool)}", None
        if endpoint == "runs":
            pool = self.own if self.own and rng.random() < 0.5 else self.background
            return endpoint, "GET", f"{BASE}/jobs/{rng.choice(pool)}/runs?limit=20", None
        if endpoint in ("update", "trigger", "delete") and self.own:
            target = rng.choice(self.own)
            if endpoint == "update":
                return endpoint, "PUT", f"{BASE}/jobs/{target}", {"schedule": rng.choice(SCHEDULES),
                                                                   "misfire_grace_s": rng.randint(30, 300)}
            if endpoint == "trigger":
                return endpoint, "POST", f"{BASE}/jobs/{target}/trigger", None
            return endpoint, "DELETE", f"{BASE}/jobs/{target}", None
        self.created += 1
        new = f"c{self.index:02d}_{self.created:06d}"
        return "create", "POST", f"{BASE}/jobs", {"job_id": new, "name": f"bench client {self.index} job {self.created}",
                                                  "schedule": rng.choice(SCHEDULES), "handler": "noop",
                                                  "args": {"client": self.index}}

    def learn(self, endpoint: str, path: str, status: int, answer: Any) -> None:
        if status == 201 and isinstance(answer, dict):
            self.own.append(answer["job_id"])
        elif endpoint == "delete" and status == 200 and isinstance(answer, dict):
            self.own.remove(answer["job_id"])

    def send(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=payload, headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
                if response.will_close:
                    self.connection.close()
                return response.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, ConnectionError, BrokenPipeError):
                # the server closed a kept-alive connection: once more on a new one
                self.connection.close()
                self.reconnects += 1
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def mix_from_env() -> dict[str, int]:
    """`MIX`, or ``BENCH_API_MIX`` (``name=weight,...``)."""
    text = os.environ.get("BENCH_API_MIX", "").strip()
    if not text:
        return dict(MIX)
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in ENDPOINTS or not weight.strip().isdigit():
            raise ValueError(f"BENCH_API_MIX: {part!r} is not ENDPOINT=WEIGHT (endpoints: {', '.join(ENDPOINTS)})")
        mix[name.strip()] = int(weight)
    return mix


def run(profile: Profile, services: Services) -> dict[str, Any]:
    cluster = CronhiveCluster(services, "api")
    mix = mix_from_env()
    loaded = [job_id(i) for i in range(profile.api_jobs)]
    background = [f"api_bg_{i:02d}" for i in range(BACKGROUND_JOBS)]
    port = free_port()
    extra_args = shlex.split(os.environ.get("BENCH_API_ARGS", ""))
    api_workers = os.environ.get("BENCH_API_WORKERS")
    try:
        cluster.load_jobs([{"name": f"bench job {i}", "job_id": job, "schedule": SCHEDULES[i % len(SCHEDULES)],
                            "handler": "noop"} for i, job in enumerate(loaded)]
                          + [{"name": job, "job_id": job, "schedule": "*/10 * * * * *", "handler": "noop"}
                             for job in background])
        with ProcessGroup() as group:
            env = cluster.env(API_HOST="127.0.0.1", API_PORT=str(port), LOG_LEVEL="WARNING",
                              **({"API_WORKERS": api_workers} if api_workers else {}))
            api = group.start("api", [str(services.main_python), "-m", "cronhive.api", *extra_args], env=env,
                              cwd=cluster.source_root, log_path=cluster.directory / "api.log")
            schedulers = [cluster.start_scheduler(group, {**env, "LOG_LEVEL": "INFO"}) for _ in range(2)]
            workers = [cluster.start_workers(group, {**env, "LOG_LEVEL": "INFO"}, 1, 4) for _ in range(2)]
            checks = cluster.ready_checks(schedulers, workers[0], 1)
            checks += cluster.ready_checks(schedulers, workers[1], 1)[-1:]
            wait_until(checks, READY_TIMEOUT_S)
            wait_healthy(api, port)
            sides = {"api": [api], "schedulers": schedulers, "workers": workers}
            costs = solo_costs(port, loaded, background, api, services)
            result = load(profile, port, loaded, background, sides, services, mix)
            result["solo"] = costs
    finally:
        cluster.cleanup()
    result["server"] = server_config(extra_args, api_workers)
    result["mix"] = mix
    result["setup"] = (f"{profile.api_clients} closed-loop clients (keep-alive), mix "
                       + ", ".join(f"{name} {weight}" for name, weight in mix.items())
                       + f"; {profile.api_jobs} jobs + {BACKGROUND_JOBS} firing every 10 s; python -m cronhive.api "
                       + " ".join(extra_args) + " + 2 × python -m cronhive.scheduler + 2 × python -m cronhive.worker "
                       "--processes 1 --threads 4")
    return result


def wait_healthy(api: Managed, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if not api.alive():
            raise RuntimeError(f"the API exited with code {api.popen.returncode}:\n{api.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not answer /healthz within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def load(profile: Profile, port: int, loaded: list[str], background: list[str], sides: dict[str, list[Managed]],
         services: Services, mix: dict[str, int]) -> dict[str, Any]:
    began = time.monotonic()
    measure_from = began + profile.api_warmup_s
    measure_until = measure_from + profile.api_duration_s
    clients = [Client(index, "127.0.0.1", port, loaded, background, measure_from, measure_until, mix)
               for index in range(profile.api_clients)]
    threads = [threading.Thread(target=client.run, name=f"api-client-{client.index}") for client in clients]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu_before = cpu_readings(sides, services)
    time.sleep(max(0.0, measure_until - time.monotonic()))
    cpu_after = cpu_readings(sides, services)
    for thread in threads:
        thread.join(HTTP_TIMEOUT_S + 5)
    failures = [failure for client in clients for failure in client.failures]
    if len(failures) == len(clients):
        raise RuntimeError(f"every client failed: {failures[0]}")
    samples = [sample for client in clients for sample in client.samples]
    window = profile.api_duration_s
    statuses = Counter(sample.status for sample in samples)
    unexpected = [sample for sample in samples if sample.status not in EXPECTED[sample.endpoint]]
    log.info("api: %d requests in %.0f s (%.1f/s), %d unexpected answers", len(samples), window,
             len(samples) / window, len(unexpected))
    return {
        "clients": profile.api_clients,
        "duration_s": window,
        "requests": len(samples),
        "requests_per_s": round(len(samples) / window, 1),
        "latency_ms": summary_ms([sample.latency_ms for sample in samples]),
        "endpoints": {name: endpoint_summary([s for s in samples if s.endpoint == name], window)
                      for name in ENDPOINTS},
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "errors_5xx": sum(count for code, count in statuses.items() if code >= 500),
        "unexpected": len(unexpected),
        "unexpected_examples": sorted({f"{s.endpoint} {s.status}" for s in unexpected})[:10],
        "client_failures": failures,
        "reconnects": sum(client.reconnects for client in clients),
        "cpu_s": {side: round(cpu_after[side] - cpu_before[side], 1) for side in cpu_before},
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def solo_costs(port: int, loaded: list[str], background: list[str], api: Managed,
               services: Services) -> dict[str, dict[str, float | None]]:
    """What one request of each endpoint costs alone: `SOLO_REQUESTS` sequential requests
    of one client before the load, their mean latency and the CPU the API and the store
    spent per request (the store's background rate — schedulers, workers — measured
    just before and subtracted)."""
    client = Client(0, "127.0.0.1", port, loaded, background, 0.0, 0.0)
    client.rng = random.Random(7)
    client.created = 900_000  # ids apart from the load's
    costs: dict[str, dict[str, float | None]] = {}
    idle_db, idle_at = _db_cpu(services), time.monotonic()
    time.sleep(SOLO_IDLE_S)
    background_rate = (_db_cpu(services) - idle_db) / (time.monotonic() - idle_at)
    for endpoint in ENDPOINTS:
        db_before, api_before, began = _db_cpu(services), group_cpu_s(api.pid), time.monotonic()
        for _ in range(SOLO_REQUESTS):
            name, method, path, body = client.plan(endpoint)
            status, answer = client.send(method, path, body)
            if status not in EXPECTED[name]:
                raise RuntimeError(f"{method} {path} answered {status}: {answer}")
            client.learn(name, path, status, answer)
        elapsed = time.monotonic() - began
        db_cpu = _db_cpu(services) - db_before - background_rate * elapsed
        costs[endpoint] = {
            "latency_ms": round(elapsed * 1000 / SOLO_REQUESTS, 2),
            "api_cpu_ms": round((group_cpu_s(api.pid) - api_before) * 1000 / SOLO_REQUESTS, 2),
            "store_cpu_ms": round(max(0.0, db_cpu) * 1000 / SOLO_REQUESTS, 2) if services.mongodb_pid else None,
        }
    client.connection.close()
    return costs


def _db_cpu(services: Services) -> float:
    return (proc_cpu_s(services.mongodb_pid) or 0.0) if services.mongodb_pid is not None else 0.0


def endpoint_summary(samples: list[Sample], window_s: float) -> dict[str, Any]:
    latencies = summary_ms([sample.latency_ms for sample in samples])
    return {
        "requests": len(samples),
        "requests_per_s": round(len(samples) / window_s, 1),
        "p50_ms": latencies["p50"],
        "p99_ms": latencies["p99"],
        "max_ms": latencies["max"],
        "statuses": {str(code): count for code, count in sorted(Counter(s.status for s in samples).items())},
    }


def group_cpu_s(pgid: int) -> float:
    """CPU seconds of every live process in process group ``pgid`` (a gunicorn or dramatiq tree)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_readings(sides: dict[str, list[Managed]], services: Services) -> dict[str, float]:
    readings = {side: sum(group_cpu_s(process.pid) for process in processes) for side, processes in sides.items()}
    if services.mongodb_pid is not None:
        readings["mongodb"] = proc_cpu_s(services.mongodb_pid) or 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    readings["clients"] = usage.ru_utime + usage.ru_stime
    return readings


def server_config(extra_args: list[str], api_workers: str | None) -> dict[str, Any]:
    """The gunicorn configuration measured: the product's (cronhive.api.gunicorn_conf,
    API_WORKERS) with BENCH_API_ARGS / BENCH_API_WORKERS applied."""
    from cronhive.api import gunicorn_conf
    from cronhive.settings import Settings

    config: dict[str, Any] = {"worker_class": gunicorn_conf.worker_class,
                              "workers": int(api_workers) if api_workers else Settings().api_workers,
                              "threads": gunicorn_conf.threads}
    flags = {"--worker-class": "worker_class", "-k": "worker_class", "--workers": "workers", "-w": "workers",
             "--threads": "threads"}
    for index, arg in enumerate(extra_args):
        name, _, value = arg.partition("=")
        if name in flags:
            value = value or (extra_args[index + 1] if index + 1 < len(extra_args) else "")
            config[flags[name]] = int(value) if flags[name] != "worker_class" else value
    if config["worker_class"] == "sync":
        config["threads"] = 1
    config["gunicorn_args"] = extra_args
    return config
