"""Real ``python -m cronhive.scheduler`` processes for the system tests, and what they left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pika

from cronhive.domain import utcnow
from cronhive.settings import Settings
from cronhive.store import LEADER_LEASE_ID, MongoStore

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SchedulerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self) -> list[dict[str, Any]]:
        """The JSON log events so far (lines that are not JSON are returned as ``{"raw": line}``)."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                events.append({"raw": line})
        return events


@dataclass
class Cluster:
    settings: Settings
    store: MongoStore
    logs: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    processes: list[SchedulerProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MONGODB_", "RABBITMQ_"))}
        env.update({
            "MONGODB_URI": self.settings.mongodb_uri,
            "MONGODB_DB": self.settings.mongodb_db,
            "MONGODB_TIMEOUT_MS": "2000",
            "RABBITMQ_URL": self.settings.rabbitmq_url,
            "RUNS_QUEUE": self.settings.runs_queue,
            "LEADER_LEASE_S": "3",
            "JOB_LEASE_S": "3",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
            **self.env_extra,
        })
        return env

    def start(self, count: int = 1) -> list[SchedulerProcess]:
        started = []
        for _ in range(count):
            log_path = self.logs / f"scheduler-{len(self.processes)}.log"
            process = subprocess.Popen([sys.executable, "-m", "cronhive.scheduler"], cwd=ROOT, env=self.env(),
                                       stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))  # noqa: SIM115 - the child keeps it
            proc = SchedulerProcess(process, log_path)
            self.processes.append(proc)
            started.append(proc)
        return started

    def by_pid(self, pid: int) -> SchedulerProcess:
        return next(proc for proc in self.processes if proc.pid == pid)

    def lease(self) -> dict[str, Any] | None:
        doc = self.store.leases.find_one({"_id": LEADER_LEASE_ID})
        return doc.get("lease") if doc else None

    def wait_for_leader(self, *, other_than: int | None = None, timeout_s: float = 20.0) -> tuple[int, dict[str, Any]]:
        """Poll (every 20 ms) until a live leader other than ``other_than`` holds the lease."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lease = self.lease()
            if lease and lease["expires_at"] > utcnow():
                pid = int(lease["holder"].rsplit(":", 1)[1])
                if pid != other_than:
                    return pid, lease
            time.sleep(0.02)
        raise AssertionError(f"no new leader within {timeout_s} s (lease: {self.lease()})")

    def stop(self) -> None:
        """SIGCONT + SIGTERM every process; SIGKILL what does not exit in 10 s."""
        for proc in self.processes:
            if proc.process.poll() is None:
                proc.process.send_signal(signal.SIGCONT)
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.process.wait(10)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()


def create_jobs(store: MongoStore, count: int, prefix: str, schedule: str = "* * * * * *",
                **fields: Any) -> list[str]:
    now = utcnow()
    ids = []
    for index in range(count):
        job_id = f"{prefix}_{index:03d}"
        store.create_job({"name": job_id, "job_id": job_id, "schedule": schedule, "handler": "noop", **fields}, now)
        ids.append(job_id)
    return ids


def wait_until_caught_up(store: MongoStore, job_ids: list[str], until: datetime, timeout_s: float = 30.0) -> None:
    """Until every job has moved past ``until`` and no run of a slot up to ``until`` is left
    ``pending`` (runs planned ahead of later slots are pending until their instant)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        behind = store.jobs.count_documents({"_id": {"$in": job_ids}, "next_fire_at": {"$lte": until}})
        pending = store.runs.count_documents({"status": "pending", "scheduled_for": {"$lte": until}})
        if behind == 0 and pending == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"not caught up after {timeout_s} s: {behind} job(s) behind, {pending} run(s) pending")


def slot_gaps(store: MongoStore, job_ids: list[str], start: datetime, end: datetime) -> dict[str, list[datetime]]:
    """For ``* * * * * *`` jobs: the seconds in ``[start, end]`` with no run, per job."""
    seen: dict[str, set[datetime]] = {job_id: set() for job_id in job_ids}
    for run in store.runs.find({"job_id": {"$in": job_ids}, "trigger": "schedule",
                                "scheduled_for": {"$gte": start, "$lte": end}}, {"job_id": 1, "scheduled_for": 1}):
        seen[run["job_id"]].add(run["scheduled_for"])
    expected = [start + timedelta(seconds=s) for s in range(int((end - start).total_seconds()) + 1)]
    return {job_id: [at for at in expected if at not in slots] for job_id, slots in seen.items()
            if len(slots) != len(expected)}


def drain(url: str, queue: str) -> Counter[str]:
    """Consume every message on ``queue`` (fast, with prefetch): run id → number of messages."""
    counts: Counter[str] = Counter()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        for method, _props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=1.0):
            if method is None:
                break
            counts[json.loads(body)["args"][0]] += 1
        channel.cancel()
    finally:
        connection.close()
    return counts


def second(at: datetime) -> datetime:
    return at.replace(microsecond=0)


def sleep_until_half_second() -> None:
    """Sleep to the next x.5 s: jobs firing every whole second are dispatched by then."""
    now = time.time()
    time.sleep((0.5 - (now % 1.0)) % 1.0 or 1.0)


@contextmanager
def scheduler_and_workers(settings: Settings, store: MongoStore, tmp_path: Path, workers: int = 1,
                          **extra_env: str) -> Iterator[Cluster]:
    """One real scheduler process (the leader) and ``workers`` real worker processes on
    the test's store and queue, ``extra_env`` added to the workers' environment."""
    from tests.worker.cluster import WorkerCluster

    schedulers = Cluster(settings, store, tmp_path)
    env = {**{key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"},
           **schedulers.env(), **extra_env}
    cluster = WorkerCluster(env, tmp_path, workers)
    try:
        cluster.start()
        schedulers.start(1)
        schedulers.wait_for_leader()
        yield schedulers
    finally:
        schedulers.stop()
        cluster.stop()
