"""Real worker processes for the system tests: ``python -m cronhive.worker`` subprocesses,
each its own process group (its own dramatiq process tree), which the tests
SIGKILL, SIGSTOP and SIGCONT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pika

from tests.services import wait_for

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def consumer_count(url: str, queue: str) -> int:
    """Consumers of ``queue``; 0 while it is not declared yet or RabbitMQ does not answer
    (the machine's RabbitMQ is shared: another test may be restarting it)."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError:
        return 0
    try:
        return connection.channel().queue_declare(queue=queue, passive=True).method.consumer_count
    except pika.exceptions.AMQPError:
        return 0
    finally:
        if connection.is_open:
            connection.close()


@dataclass
class WorkerProcess:
    index: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cronhive.worker", "--processes", "1", "--threads", "2"],
                cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_tree(self, signum: int) -> None:
        """Signal the whole tree (dramatiq master and its worker process)."""
        os.killpg(self.pid, signum)

    def kill(self) -> None:
        self.signal_tree(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def request_stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.signal_tree(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)  # the master stops its workers gracefully

    def wait_stopped(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.signal_tree(signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class WorkerCluster:
    env: dict[str, str]
    log_dir: Path
    size: int
    #: extra environment of some workers, by index
    per_worker: dict[int, dict[str, str]] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workers = [
            WorkerProcess(index, {**self.env, **self.metrics_env(index), **self.per_worker.get(index, {})},
                          self.log_dir / f"worker-{index}.log")
            for index in range(self.size)
        ]

    def metrics_env(self, index: int) -> dict[str, str]:
        """Each tree's multiprocess metrics directory, inside the test's temporary
        directory (a SIGKILLed tree cannot remove its own)."""
        path = self.log_dir / f"metrics-{index}"
        path.mkdir(exist_ok=True)
        return {"PROMETHEUS_MULTIPROC_DIR": str(path)}

    @property
    def queue(self) -> str:
        return self.env["RUNS_QUEUE"]

    def start(self) -> None:
        for worker in self.workers:
            if not worker.alive():
                worker.start()
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Every worker process consumes the runs queue."""
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                raise AssertionError(f"worker {worker.index} exited ({worker.process.returncode}):\n{worker.log()[-3000:]}")
        wait_for(lambda: consumer_count(self.env["RABBITMQ_URL"], self.queue) >= self.size, timeout_s,
                 f"{self.size} consumers on {self.queue}")

    def stop(self) -> None:
        for worker in self.workers:
            worker.request_stop()
        for worker in self.workers:
            worker.wait_stopped()

    def by_worker_name(self, name: str) -> WorkerProcess:
        """The tree whose worker process is ``hostname:pid`` (the run's ``worker`` field)."""
        pid = int(name.rsplit(":", 1)[1])
        group = os.getpgid(pid)
        for worker in self.workers:
            if worker.process is not None and worker.pid == group:
                return worker
        raise LookupError(name)

    def logs(self) -> dict[int, str]:
        return {worker.index: worker.log() for worker in self.workers}
