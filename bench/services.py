"""The services a benchmark run shares: its own SecantusDB and the machine's RabbitMQ.

SecantusDB (MongoDB-wire, WiredTiger) is started standalone with
``--sync-on-commit`` by the test suite's `SecantusServer`, with its files under
the run's work directory. ``BENCH_MONGODB_URI`` points the run at another
MongoDB instead. RabbitMQ is the one on ``BENCH_RABBITMQ_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/%2F``); every system gets its own queue
names (``cronhive.bench.<tag>.…``), which its scenario deletes afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pika
from pymongo import MongoClient

from tests.services import SecantusServer, check_rabbitmq

log = logging.getLogger("bench.services")

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
DEFAULT_PEERS_PYTHON = BENCH_DIR / ".venv-peers" / "bin" / "python"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class Services:
    """What a scenario gets: service addresses, interpreters and a scratch directory."""

    mongodb_uri: str
    rabbitmq_url: str
    #: this run's scratch directory (logs, start records); kept after the run for inspection
    workdir: Path
    #: the interpreter of the peers' virtualenv (bench/.venv-peers); None when no peer runs
    peers_python: Path | None
    #: the interpreter running the harness: the main .venv, with cronhive installed
    main_python: Path = Path(sys.executable)
    repo_root: Path = REPO_ROOT
    #: the pid of the SecantusDB the harness started (None with BENCH_MONGODB_URI), for CPU readings
    mongodb_pid: int | None = None

    @staticmethod
    def new_tag() -> str:
        return uuid.uuid4().hex[:8]

    def scenario_dir(self, name: str) -> Path:
        path = self.workdir / name
        (path / "records").mkdir(parents=True, exist_ok=True)
        return path

    def peers_bin(self, script: str) -> str:
        if self.peers_python is None:
            raise RuntimeError("the peers' virtualenv was not prepared for this run")
        return str(self.peers_python.with_name(script))

    def base_env(self, record_dir: Path) -> dict[str, str]:
        """The environment of every process a scenario starts: UTC, the repo importable, records dir."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update({
            "TZ": "UTC",
            "PYTHONPATH": str(self.repo_root),
            "PYTHONUNBUFFERED": "1",
            "BENCH_RECORD_DIR": str(record_dir),
        })
        return env

    def delete_queues(self, *queues: str) -> None:
        self._on_channel(lambda channel: [channel.queue_delete(queue=queue) for queue in queues])

    def delete_exchanges(self, *exchanges: str) -> None:
        self._on_channel(lambda channel: [channel.exchange_delete(exchange=exchange) for exchange in exchanges])

    def _on_channel(self, action) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.rabbitmq_url))
        try:
            action(connection.channel())
        except Exception as exc:  # cleanup must not hide the scenario's own outcome
            log.warning("RabbitMQ cleanup failed: %r", exc)
        finally:
            connection.close()

    def drop_database(self, name: str) -> None:
        client: MongoClient = MongoClient(self.mongodb_uri, serverSelectionTimeoutMS=3000)
        try:
            client.drop_database(name)
        finally:
            client.close()


def rabbitmq_url() -> str:
    return os.environ.get("BENCH_RABBITMQ_URL") or DEFAULT_RABBITMQ_URL


def peers_python() -> Path:
    path = Path(os.environ.get("BENCH_PEERS_PYTHON") or DEFAULT_PEERS_PYTHON)
    if not path.exists():
        raise RuntimeError(f"the peers' virtualenv is missing ({path}): `make bench` creates it from bench/requirements-peers.txt")
    return path


@contextmanager
def started(workdir: Path, *, need_peers: bool = True) -> Iterator[Services]:
    """SecantusDB started for the run (unless BENCH_MONGODB_URI), RabbitMQ checked; stopped after.
    The peers' virtualenv is required only when a peer runs (``need_peers``)."""
    url = rabbitmq_url()
    check_rabbitmq(url)
    python = peers_python() if need_peers else None
    external = os.environ.get("BENCH_MONGODB_URI")
    server = None if external else SecantusServer(data_dir=str(workdir / "secantusdb")).start()
    try:
        yield Services(mongodb_uri=external or server.uri, rabbitmq_url=url, workdir=workdir, peers_python=python,
                       mongodb_pid=server.process.pid if server is not None and server.process else None)
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.data_dir / "db", ignore_errors=True)
