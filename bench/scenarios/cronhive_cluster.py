"""What cronhive's three scenarios share: a database and queue of their own, the jobs
bulk-loaded in the store's own document shape, and the processes started as a
deployment starts them (``python -m cronhive.scheduler``, ``python -m cronhive.worker``), each in
its own process group of a `bench.procs.ProcessGroup` (so always stopped).

Settings are the product's defaults except where a scenario says otherwise;
``METRICS_PORT=0`` because several schedulers share one host here (the
health/metrics server is not measured).

``BENCH_CRONHIVE_ROOT`` (optional) runs cronhive's processes from another source
tree (a checkout with a candidate patch) for before/after comparisons; the
harness, the jobs' document shape and the analysis stay this tree's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.herd import Ready
from bench.procs import Managed, ProcessGroup
from bench.services import BENCH_DIR, Services
from cronhive.broker import hand_on_queue
from cronhive.domain import utcnow
from cronhive.store import LEADER_LEASE_ID, MongoStore

HANDLER_MODULE = "bench.cronhive_handlers"
#: put first on PYTHONPATH to load bench/shim/sitecustomize.py (bench.probe) at start-up
SHIM_DIR = BENCH_DIR / "shim"
#: logged by every dramatiq worker process once it consumes (dramatiq's own line)
WORKER_READY = "Worker process is ready for action."
LEADER_MARKER = "became the leader"
SCHEDULER_STARTED = "scheduler started"
LOAD_CHUNK = 5000


def namespace_tree(source_root: Path, where: Path) -> Path:
    """A directory whose ``cronhive`` package is ``source_root``'s, laid out as the wheel
    lays it out (``shared/*`` plus ``api``, ``scheduler``, ``worker``): first on the
    processes' ``PYTHONPATH`` it wins over this tree's editable install, so the processes
    really run the other tree's code (a plain ``PYTHONPATH=source_root`` does not: the
    installed package maps ``cronhive`` to this tree)."""
    package = where / "cronhive"
    if package.exists():
        return where
    package.mkdir(parents=True)
    for entry in sorted((source_root / "shared").iterdir()):
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for folder in ("api", "scheduler", "worker"):
        (package / folder).symlink_to(source_root / folder)
    return where


class _Collector:
    """Stands in for the ``jobs`` collection while `MongoStore.create_job` builds documents:
    keeps what it would insert, so the bulk insert writes exactly the store's shape."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def insert_one(self, doc: dict[str, Any]) -> None:
        self.docs.append(doc)


@dataclass(frozen=True)
class AnyReady(Ready):
    """Met once ``marker`` appears in the output of ``process`` or any of ``others``
    (e.g. one of the schedulers became the leader)."""

    others: tuple[Managed, ...] = ()

    def met(self) -> bool:
        return any(process.count(self.marker) >= self.count for process in (self.process, *self.others))


class CronhiveCluster:
    """One scenario's cronhive: its database, queue, environment and processes."""

    def __init__(self, services: Services, scenario: str, *, tag: str | None = None, dirname: str | None = None) -> None:
        self.services = services
        self.scenario = scenario
        self.tag = tag or services.new_tag()
        self.directory = services.scenario_dir(dirname or f"cronhive-{scenario}")
        self.record_dir = self.directory / "records"
        self.probe_dir = self.directory / "probe"
        self.schedulers: list[Managed] = []
        self.workers: list[Managed] = []
        self.source_root = Path(os.environ.get("BENCH_CRONHIVE_ROOT") or services.repo_root)

    @property
    def database(self) -> str:
        return f"cronhive_bench_{self.tag}_{self.scenario}"

    @property
    def queue(self) -> str:
        return f"cronhive.bench.{self.tag}.runs"

    # -- environment ----------------------------------------------------------------

    def env(self, *, probe: bool = False, **settings: str) -> dict[str, str]:
        """The processes' environment: the product's settings variables, plus ``settings``."""
        env = self.services.base_env(self.record_dir)
        env = {key: value for key, value in env.items() if not key.startswith(("MONGODB_", "RABBITMQ_"))}
        env.update({
            "MONGODB_URI": self.services.mongodb_uri,
            "MONGODB_DB": self.database,
            "RABBITMQ_URL": self.services.rabbitmq_url,
            "RUNS_QUEUE": self.queue,
            "HANDLER_MODULES": HANDLER_MODULE,
            "METRICS_PORT": "0",
            **settings,
        })
        if self.source_root != self.services.repo_root:
            tree = namespace_tree(self.source_root, self.directory / "source")
            env["PYTHONPATH"] = f"{tree}:{self.source_root}:{self.services.repo_root}"
        if probe:
            self.probe_dir.mkdir(parents=True, exist_ok=True)
            env["PYTHONPATH"] = f"{SHIM_DIR}:{env['PYTHONPATH']}"
            env["BENCH_PROBE_DIR"] = str(self.probe_dir)
        return env

    # -- data -----------------------------------------------------------------------

    def client(self) -> MongoClient:
        return MongoClient(self.services.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)

    def load_jobs(self, specs: Iterable[dict[str, Any]], now: datetime | None = None) -> int:
        """Insert jobs (API fields: name, job_id, schedule, handler, policies...) in bulk,
        built by `MongoStore.create_job` itself; creates the store's indexes first."""
        now = now or utcnow()
        client = self.client()
        try:
            store = MongoStore(client, self.database, owns_client=False)
            store.ensure_indexes()
            real_jobs, collector = store.jobs, _Collector()
            store.jobs = collector  # type: ignore[assignment]
            for fields in specs:
                store.create_job(fields, now)
            for start in range(0, len(collector.docs), LOAD_CHUNK):
                real_jobs.insert_many(collector.docs[start:start + LOAD_CHUNK], ordered=False)
            return len(collector.docs)
        finally:
            client.close()

    def leader_lease(self, client: MongoClient) -> dict[str, Any] | None:
        doc = client[self.database]["leases"].find_one({"_id": LEADER_LEASE_ID})
        return (doc or {}).get("lease") or None

    # -- processes ------------------------------------------------------------------

    def start_scheduler(self, group: ProcessGroup, env: dict[str, str]) -> Managed:
        index = len(self.schedulers)
        process = group.start(f"scheduler-{index}", [str(self.services.main_python), "-m", "cronhive.scheduler"],
                              env=env, cwd=self.source_root, log_path=self.directory / f"scheduler-{index}.log")
        self.schedulers.append(process)
        return process

    def start_workers(self, group: ProcessGroup, env: dict[str, str], processes: int, threads: int) -> Managed:
        index = len(self.workers)
        process = group.start(
            f"worker-{index}",
            [str(self.services.main_python), "-m", "cronhive.worker", "--processes", str(processes), "--threads", str(threads)],
            env=env, cwd=self.source_root, log_path=self.directory / f"worker-{index}.log")
        self.workers.append(process)
        return process

    def ready_checks(self, schedulers: Sequence[Managed], workers: Managed, processes: int) -> list[Ready]:
        """Every scheduler started, one of them leader, every worker process consuming."""
        checks: list[Ready] = [Ready(process, SCHEDULER_STARTED) for process in schedulers]
        checks.append(AnyReady(schedulers[0], LEADER_MARKER, others=tuple(schedulers[1:])))
        checks.append(Ready(workers, WORKER_READY, processes))
        return checks

    def scheduler_by_pid(self, pid: int) -> Managed | None:
        return next((process for process in self.schedulers if process.pid == pid), None)

    # -- cleanup --------------------------------------------------------------------

    def cleanup(self) -> None:
        # the runs queue and its hand-on queue, each with its .DQ and .XQ
        self.services.delete_queues(*(name + suffix for name in (self.queue, hand_on_queue(self.queue))
                                      for suffix in ("", ".DQ", ".XQ")))
        self.services.drop_database(self.database)


def wait_until(checks: Sequence[Ready], timeout_s: float) -> None:
    """Wait for readiness outside a herd (no slot): raise when a process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        for check in checks:
            if not check.process.alive():
                raise RuntimeError(f"{check.process.name} exited with code {check.process.popen.returncode} "
                                   f"before it was ready:\n{check.process.tail()}")
        if all(check.met() for check in checks):
            return
        if time.monotonic() > deadline:
            waiting = sorted({check.process.name for check in checks if not check.met()})
            raise RuntimeError(f"not ready within {timeout_s:.0f} s: {', '.join(waiting)}")
        time.sleep(0.1)


def holder_pid(lease: dict[str, Any] | None) -> int | None:
    if not lease:
        return None
    try:
        return int(str(lease["holder"]).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, seconds (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmHWM: peak RSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
