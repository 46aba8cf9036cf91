"""``cronhive up`` (``make up``): the whole cluster in the foreground, for local use.

Starts, when ``MONGODB_URI`` is unset, an embedded SecantusDB (MongoDB-wire,
``--sync-on-commit`` so a kill loses no acknowledged write, data under
``DATA_DIR``); then the API, two schedulers and two workers, each its own
process group.

A process that exits while the cluster runs (it crashed, or was killed by hand)
is restarted, with a backoff of 1 s doubling to 30 s between restarts of the
same process, reset once it has stayed up `STABLE_AFTER_S`; each exit and
restart is one log line. What is left of the dead process's group (a gunicorn
or dramatiq child) is killed first, so the new one can bind its port. The
embedded MongoDB is restarted the same way: its commits are durable, so
nothing acknowledged is lost, and the other processes ride out the outage
(the API answers 503 meanwhile). ``--no-restart`` only reports an exit and
leaves the process dead — to watch a standby scheduler take over.

Ctrl-C or SIGTERM stops everything it started: workers, schedulers and API
first, MongoDB last.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
POLL_INTERVAL_S = 0.5

#: first delay before restarting a process that exited, doubled for each quick re-exit ...
INITIAL_BACKOFF_S = 1.0
#: ... up to this
MAX_BACKOFF_S = 30.0
#: a process that stayed up this long before exiting is restarted after `INITIAL_BACKOFF_S` again
STABLE_AFTER_S = 60.0

DESCRIPTION = """The local cluster in the foreground: an embedded MongoDB (SecantusDB, when
MONGODB_URI is unset; data under DATA_DIR), the API on API_HOST:API_PORT, two
schedulers and two workers. A process that exits is restarted with backoff
(1 s doubling to 30 s). Ctrl-C stops everything."""

EPILOG = """environment: every setting of the README's Configuration table; give
API_PORT, EMBEDDED_MONGODB_PORT, METRICS_PORT, DATA_DIR and RUNS_QUEUE of your
own to run beside another cluster."""


@dataclass(frozen=True)
class ChildSpec:
    """How to start one process of the cluster."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]


@dataclass
class Child:
    """One supervised process: its current incarnation and its restart state."""

    spec: ChildSpec
    process: subprocess.Popen[bytes]
    started_at: float
    #: the delay of the last restart (None: never restarted, or reset)
    backoff_s: float | None = None
    #: when the process has exited and a restart is due (monotonic), else None
    restart_at: float | None = None
    restarts: int = 0
    #: --no-restart: the exit was logged once
    reported: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


def restart_delay(previous_s: float | None, uptime_s: float) -> float:
    """Seconds to wait before restarting a process that ran ``uptime_s`` before exiting:
    `INITIAL_BACKOFF_S` the first time and after a stable run, else the previous delay
    doubled, at most `MAX_BACKOFF_S`."""
    if previous_s is None or uptime_s >= STABLE_AFTER_S:
        return INITIAL_BACKOFF_S
    return min(previous_s * 2, MAX_BACKOFF_S)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launcher itself dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(spec: ChildSpec) -> subprocess.Popen[bytes]:
    """Start one process in a session (and process group) of its own."""
    return subprocess.Popen(list(spec.argv), env=spec.env, start_new_session=True, preexec_fn=_die_with_parent)


def kill_leftovers(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what remains of an exited child's process group (its own children).

    Called as soon as the exit is seen: the group id is the child's pid, which the
    kernel does not hand out again while a member of the group lives."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Supervisor:
    """Starts the cluster's processes and restarts those that exit (unless ``restart`` is off)."""

    def __init__(self, *, restart: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.restart = restart
        self.clock = clock
        self.children: list[Child] = []

    def start(self, spec: ChildSpec) -> Child:
        child = Child(spec, spawn(spec), self.clock())
        self.children.append(child)
        log.info("started %s (pid %d)", spec.name, child.process.pid)
        return child

    def poll(self) -> None:
        """Notice exits, schedule restarts, carry out those that are due."""
        now = self.clock()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child, now)
                continue
            returncode = child.process.poll()
            if returncode is None or child.reported:
                continue
            kill_leftovers(child.process)
            uptime = now - child.started_at
            if not self.restart:
                child.reported = True
                log.warning("%s (pid %d) %s after %.0f s; not restarted (--no-restart), the other processes "
                            "keep running", child.name, child.process.pid, describe_exit(returncode), uptime)
                continue
            child.backoff_s = restart_delay(child.backoff_s, uptime)
            child.restart_at = now + child.backoff_s
            log.warning("%s (pid %d) %s after %.0f s; restarting it in %.0f s", child.name, child.process.pid,
                        describe_exit(returncode), uptime, child.backoff_s)

    def _restart(self, child: Child, now: float) -> None:
        child.restart_at = None
        child.restarts += 1
        child.started_at = now
        try:
            child.process = spawn(child.spec)
        except OSError as exc:  # cannot even fork/exec: try again later
            child.backoff_s = restart_delay(child.backoff_s, 0.0)
            child.restart_at = now + child.backoff_s
            log.error("could not restart %s: %s; trying again in %.0f s", child.name, exc, child.backoff_s)
            return
        log.warning("restarted %s (pid %d, restart %d)", child.name, child.process.pid, child.restarts)

    def stop(self, children: Sequence[Child] | None = None) -> None:
        """SIGTERM ``children`` (default: all, in reverse start order), SIGKILL their groups after
        `STOP_TIMEOUT_S`."""
        targets = list(reversed(self.children if children is None else children))
        for child in targets:
            child.restart_at = None
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in targets:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def embedded_mongodb_spec(settings: Settings, env: dict[str, str]) -> ChildSpec:
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
    argv = (str(server), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", str(data / "mongodb"), "--sync-on-commit", "--standalone", "--log-level", "WARNING")
    return ChildSpec("mongodb (embedded SecantusDB)", argv, env)


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
        commands += [(f"worker-{i}", [python, "-m", "cronhive.worker", "--processes", "1", "--threads", "4"])
                     for i in (1, 2)]
    return [
        (name, argv, {} if name == "api" else {"METRICS_PORT": str(metrics_port + index if metrics_port else 0)})
        for index, (name, argv) in enumerate(commands)
    ]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cronhive up", description=DESCRIPTION, epilog=EPILOG,
                                     allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="leave a process that exits dead (report it only), e.g. to watch a standby "
                             "scheduler take over from a killed leader")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): nothing was started
        return exc.code if isinstance(exc.code, int) else 0
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
    supervisor = Supervisor(restart=args.restart)
    infra: list[Child] = []
    try:
        check_rabbitmq(settings)
        if settings.mongodb_uri_from_default:
            mongo = supervisor.start(embedded_mongodb_spec(settings, env))
            infra.append(mongo)
            uri = f"mongodb://127.0.0.1:{settings.embedded_mongodb_port}"
            wait_for_mongodb(uri, mongo)
            env["MONGODB_URI"] = uri
            log.info("embedded MongoDB ready at %s (data in %s)", uri, Path(settings.data_dir).resolve())
        for name, argv_, extra_env in cluster_commands(settings.metrics_port):
            supervisor.start(ChildSpec(name, tuple(argv_), {**env, **extra_env}))
        log.info("cronhive is up: API on http://%s:%d/api/v1/cron/jobs — Ctrl-C stops everything%s",
                 settings.api_host, settings.api_port, "" if args.restart else " (--no-restart)")
        while not stopping:
            supervisor.poll()
            time.sleep(POLL_INTERVAL_S)
        log.info("stopping every process cronhive up started")
        return 0
    except ConfigurationError as exc:
        log.error("%s", exc.message)
        return 1
    finally:
        supervisor.stop([child for child in supervisor.children if child not in infra])
        supervisor.stop(infra)
