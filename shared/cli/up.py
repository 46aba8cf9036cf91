"""``cronhive up`` (``make up``): the whole cluster in the foreground, for local use.

Starts, when ``MONGODB_URI`` is unset, an embedded SecantusDB (MongoDB-wire,
``--sync-on-commit`` so a kill loses no acknowledged write, data under
``DATA_DIR``); then the API, two schedulers and two workers, each its own
process group. A process that dies (or is killed by hand, to try failover) is
reported and the others keep running. Ctrl-C or SIGTERM stops everything it
started: workers, schedulers and API first, MongoDB last.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from cronhive.errors import BrokerUnavailable, ConfigurationError
from cronhive.logs import configure_logging
from cronhive.ops_server import rabbitmq_check
from cronhive.settings import Settings

log = logging.getLogger("cronhive.up")

STOP_TIMEOUT_S = 25.0
PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    reported: bool = False


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launcher itself dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(name: str, argv: list[str], env: dict[str, str]) -> Child:
    process = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    log.info("started %s (pid %d)", name, process.pid)
    return Child(name, process)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def start_embedded_mongodb(settings: Settings, env: dict[str, str]) -> tuple[Child, str]:
    server = Path(sys.executable).with_name("secantusd-py")
    if not server.exists():
        raise ConfigurationError("MONGODB_URI is unset and the embedded MongoDB (SecantusDB) is not installed: "
                                 "pip install 'cronhive[embedded]' or set MONGODB_URI")
    port = settings.embedded_mongodb_port
    if not port_free("127.0.0.1", port):
        raise ConfigurationError(f"MONGODB_URI is unset and port {port} is taken: set MONGODB_URI to that server, "
                                 "or EMBEDDED_MONGODB_PORT to a free port")
    data = Path(settings.data_dir).resolve()
    (data / "mongodb").mkdir(parents=True, exist_ok=True)
    config = data / "secantusd.toml"
    config.touch()
    argv = [str(server), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", str(data / "mongodb"), "--sync-on-commit", "--standalone", "--log-level", "WARNING"]
    child = spawn("mongodb (embedded SecantusDB)", argv, env)
    uri = f"mongodb://127.0.0.1:{port}"
    wait_for_mongodb(uri, child)
    return child, uri


def wait_for_mongodb(uri: str, child: Child, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=1000)
    try:
        while True:
            if child.process.poll() is not None:
                raise ConfigurationError(f"the embedded MongoDB exited with code {child.process.returncode}")
            try:
                client.admin.command("ping")
                return
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"the embedded MongoDB did not answer on {uri} within {timeout_s:.0f} s") from None
                time.sleep(0.3)
    finally:
        client.close()


def check_rabbitmq(settings: Settings) -> None:
    try:
        rabbitmq_check(settings)
    except BrokerUnavailable as exc:
        raise ConfigurationError(f"{exc.message}; start it (rabbitmq-server -detached) or set RABBITMQ_URL") from None


def available(module: str) -> bool:
    return importlib.util.find_spec(f"{module}.__main__") is not None


def cluster_commands(metrics_port: int) -> list[tuple[str, list[str], dict[str, str]]]:
    """Name, argv and extra env of each process; each scheduler and worker gets its
    own metrics port (METRICS_PORT + 1, + 2, ...; 0 keeps them all off)."""
    python = sys.executable
    commands: list[tuple[str, list[str]]] = [("api", [python, "-m", "cronhive.api"])]
    if available("cronhive.scheduler"):
        commands += [(f"scheduler-{i}", [python, "-m", "cronhive.scheduler"]) for i in (1, 2)]
    if available("cronhive.worker"):
        commands += [(f"worker-{i}", [python, "-m", "cronhive.worker", "--processes", "1", "--threads", "4"]) for i in (1, 2)]
    return [
        (name, argv, {} if name == "api" else {"METRICS_PORT": str(metrics_port + index if metrics_port else 0)})
        for index, (name, argv) in enumerate(commands)
    ]


def stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in reversed(children):
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.process.wait(remaining)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.name)
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def main(argv: list[str] | None = None) -> int:
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"cronhive up: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    env = dict(os.environ)
    infra: list[Child] = []
    children: list[Child] = []
    try:
        check_rabbitmq(settings)
        if settings.mongodb_uri_from_default:
            mongo, uri = start_embedded_mongodb(settings, env)
            infra.append(mongo)
            env["MONGODB_URI"] = uri
            log.info("embedded MongoDB ready at %s (data in %s)", uri, Path(settings.data_dir).resolve())
        for name, argv_, extra_env in cluster_commands(settings.metrics_port):
            children.append(spawn(name, argv_, {**env, **extra_env}))
        log.info("cronhive is up: API on http://%s:%d/api/v1/cron/jobs — Ctrl-C stops everything",
                 settings.api_host, settings.api_port)
        while not stopping:
            for child in infra + children:
                if not child.reported and child.process.poll() is not None:
                    child.reported = True
                    log.warning("%s (pid %d) exited with code %s; the other processes keep running",
                                child.name, child.process.pid, child.process.returncode)
            time.sleep(0.5)
        log.info("stopping every process cronhive up started")
        return 0
    except ConfigurationError as exc:
        log.error("%s", exc.message)
        return 1
    finally:
        stop(children)
        stop(infra)
