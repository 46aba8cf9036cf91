"""The ``machine`` section: cores, memory, CPU, and the versions of everything measured."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

import pika
from pymongo import MongoClient

from bench.services import Services

MAIN_PACKAGES = ("cronhive", "dramatiq", "pika", "pymongo", "SecantusDB")
PEER_PACKAGES = ("celery", "kombu", "amqp", "periodiq", "dramatiq", "pendulum", "APScheduler", "pymongo", "pika")


def describe(services: Services) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory": _memory(),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": {
            "python": platform.python_version(),
            "main": {name: _version(name) for name in MAIN_PACKAGES},
            "peers": _peer_versions(services),
            "rabbitmq": _rabbitmq_version(services.rabbitmq_url),
            "mongodb_wire": _mongodb_version(services.mongodb_uri),
        },
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _memory() -> str | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _peer_versions(services: Services) -> dict[str, str | None]:
    if services.peers_python is None:  # no peer in this run
        return {name: None for name in PEER_PACKAGES}
    code = ("import json, importlib.metadata as m\n"
            "def v(n):\n try: return m.version(n)\n except m.PackageNotFoundError: return None\n"
            f"print(json.dumps({{n: v(n) for n in {list(PEER_PACKAGES)!r}}}))")
    output = subprocess.run([str(services.peers_python), "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(output.stdout)


def _rabbitmq_version(url: str) -> str | None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        version = connection._impl.server_properties.get("version")
        return version.decode() if isinstance(version, bytes) else version
    finally:
        connection.close()


def _mongodb_version(uri: str) -> str | None:
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=3000)
    try:
        info = client.admin.command("buildInfo")
        name = "SecantusDB " + (_version("SecantusDB") or "?") if "secantus" in json.dumps(info, default=str).lower() else "MongoDB"
        return f"{name} (wire version {info.get('version')})"
    finally:
        client.close()
