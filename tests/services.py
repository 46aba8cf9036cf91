"""Real services for the tests (SPEC §8).

MongoDB: ``MONGODB_URI`` if set; else a ``mongo:7`` testcontainer when a Docker
engine answers; else a SecantusDB server (MongoDB-wire, on WiredTiger) started
for the session. RabbitMQ: ``RABBITMQ_URL`` if set; else a
``rabbitmq:3-management`` testcontainer when Docker answers; else the RabbitMQ
running on this machine (``.ci/run`` starts it). A service that cannot be had
fails the session loudly: these tests never skip.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pika
from pymongo import MongoClient, monitoring
from pymongo.errors import PyMongoError

from cronhive.broker import hand_on_queue

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Poll until ``predicate()`` is truthy and return its value; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


# Ports handed to servers the tests start. They are drawn BELOW the kernel's
# ephemeral range (ip_local_port_range, 32768-60999 by default): a port the kernel
# picked for `bind(0)` is released before the server binds it, and meanwhile any
# outgoing connection (a pymongo pool, a pika channel) may be given the same port
# ("Address already in use"). Outgoing connections never take ports below that range.
_PORT_RANGE = (10_000, 25_000)
_handed_out: set[int] = set()
_port_random = random.Random()


class CommandCounter(monitoring.CommandListener):
    """Counts the commands this client sends (handshakes and monitoring excluded)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in {"hello", "ismaster", "isMaster", "endSessions"}:
            with self._lock:
                self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        with self._lock:
            taken, self.names = self.names, []
        return taken


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and outside the ephemeral range."""
    for _ in range(1000):
        port = _port_random.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORT_RANGE}")


def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def wait_for_mongodb(uri: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None) -> None:
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=500)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with code {process.returncode}")
            try:
                client.admin.command("ping")
                return
            except PyMongoError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"MongoDB at {uri} did not answer within {timeout_s} s") from None
                time.sleep(0.2)
    finally:
        client.close()


class SecantusServer:
    """A SecantusDB server process: durable commits, standalone, its own data dir."""

    def __init__(self, port: int | None = None, data_dir: str | None = None) -> None:
        self.port = port or free_port()
        self.own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="cronhive-secantus-"))
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> SecantusServer:
        binary = Path(sys.executable).with_name("secantusd-py")
        config = self.data_dir / "secantusd.toml"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config.touch()
        with open(self.data_dir / "server.log", "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
                 "--storage-path", str(self.data_dir / "db"), "--sync-on-commit", "--standalone",
                 "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        wait_for_mongodb(self.uri, process=self.process)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@contextmanager
def mongodb() -> Iterator[str]:
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    if docker_answers():
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7") as container:
            yield container.get_connection_url()
        return
    server = SecantusServer().start()
    try:
        yield server.uri
    finally:
        server.cleanup()


def check_rabbitmq(url: str) -> None:
    try:
        pika.BlockingConnection(pika.URLParameters(url + ("&" if "?" in url else "?") + "connection_attempts=3&retry_delay=1")).close()
    except Exception as exc:
        raise RuntimeError(f"RabbitMQ is not reachable at {url}: {exc!r} (start it: rabbitmq-server -detached)") from exc


@contextmanager
def rabbitmq() -> Iterator[str]:
    if os.environ.get("RABBITMQ_URL"):
        check_rabbitmq(os.environ["RABBITMQ_URL"])
        yield os.environ["RABBITMQ_URL"]
        return
    if docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3-management") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/%2F"
        return
    check_rabbitmq(DEFAULT_RABBITMQ_URL)
    yield DEFAULT_RABBITMQ_URL


def queue_depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return channel.queue_declare(queue=queue, durable=True, passive=True).method.message_count
    finally:
        connection.close()


def get_messages(url: str, queue: str) -> list[bytes]:
    """Take every message currently on ``queue`` (acked: they are gone after)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    bodies = []
    try:
        channel = connection.channel()
        while True:
            method, _props, body = channel.basic_get(queue=queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body)
    finally:
        connection.close()


def delete_queues(url: str, *queues: str) -> None:
    """Delete ``queues`` — and, for a runs queue among them, its hand-on queue's three
    (`cronhive.broker.hand_on_queue`), which a worker declares beside it."""
    names = list(queues)
    for queue in queues:
        if not queue.endswith((".DQ", ".XQ")):
            names += [hand_on_queue(queue) + suffix for suffix in ("", ".DQ", ".XQ")]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in dict.fromkeys(names):
            channel.queue_delete(queue=queue)
    finally:
        connection.close()


MANAGEMENT_URL = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672").rstrip("/") + "/api"


def management(method: str, path: str, body: object = None) -> Any:
    """One call of RabbitMQ's management API (guest/guest): its JSON answer, or None."""
    import base64
    import json
    import urllib.request

    headers = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
               "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(MANAGEMENT_URL + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=15) as response:
        text = response.read()
        return json.loads(text) if text else None


def connection_named(name: str) -> str:
    """RabbitMQ's name of the connection whose client named itself ``name`` (the
    management API lists a new connection within its stats interval)."""

    def find() -> str | None:
        for connection in management("GET", "/connections"):
            if (connection.get("client_properties") or {}).get("connection_name") == name:
                return str(connection["name"])
        return None

    return wait_for(find, 30, f"connection {name} in the management API", interval_s=0.5)


def close_connection(rabbit_name: str) -> None:
    """Close a client's connection from the broker's side (as a RabbitMQ restart or a
    network drop would)."""
    from urllib.parse import quote

    management("DELETE", "/connections/" + quote(rabbit_name, safe=""))


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120, capture_output=True)
