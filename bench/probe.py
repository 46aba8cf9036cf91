"""Counts what a process under test asks of MongoDB and RabbitMQ, without touching its code.

Installed at interpreter start by ``bench/shim/sitecustomize.py`` when
``BENCH_PROBE_DIR`` is set (the scale scenario sets it for the scheduler and
worker processes only):

* a `pymongo.monitoring.CommandListener` registered globally before any client
  exists, counting every command the process sends, by name and collection
  (``find runs``, ``update jobs``, ``findAndModify leases``, ...; server
  monitoring's heartbeats are not commands and are not counted);
* the documents each command wrote, from its reply (``n`` of an insert or a
  delete, ``nModified`` + upserts of an update, ``lastErrorObject.n`` of a
  find-and-modify): ``docs_written``;
* a wrapper around pika's ``BlockingChannel.basic_publish`` (what dramatiq's
  RabbitmqBroker publishes with), counting AMQP publishes and appending
  ``<run_id>\t<epoch>`` to ``<dir>/publishes-<pid>.tsv`` when the call returns —
  with publisher confirms (cronhive's), that is the instant RabbitMQ confirmed
  the message. One ``os.write`` per publish, like `bench.recorder`;
* for pipelined confirms (`cronhive.confirms`, the scheduler's publishing): a
  wrapper around pika's asynchronous ``Channel.basic_publish`` counting publishes,
  and — once that module is loaded, at its first publish — around its batch's
  ``settle``/``settle_up_to``, recording each run's confirm instant the same way.

Every ``DUMP_S`` seconds (and at exit) a daemon thread writes the running totals
to ``<dir>/probe-<pid>.json`` (write then rename: readers never see half a file).
The harness diffs two snapshots to count a window. A forked child (dramatiq's
worker processes) starts again from zero under its own pid.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

DUMP_S = 0.1

_state: dict[str, Any] = {}
#: the first argument of a dramatiq message body: cronhive's run id
_FIRST_ARG = re.compile(rb'"args":\["([^"]*)"')


def _reset() -> None:
    _state["lock"] = threading.Lock()
    _state["commands"] = Counter()
    _state["publishes"] = 0
    _state["docs_written"] = 0
    _state["pid"] = os.getpid()
    _state["publish_fd"] = None
    thread = threading.Thread(target=_dump_forever, name="bench-probe", daemon=True)
    _state["thread"] = thread
    thread.start()


def _count_command(name: str) -> None:
    with _state["lock"]:
        _state["commands"][name] += 1


def _count_written(docs: int) -> None:
    with _state["lock"]:
        _state["docs_written"] += docs


def written_by(command_name: str, reply: Any) -> int:
    """Documents a write command's reply says it wrote."""
    if not isinstance(reply, dict):
        return 0
    if command_name in ("insert", "delete"):
        return int(reply.get("n", 0) or 0)
    if command_name == "update":
        return int(reply.get("nModified", 0) or 0) + len(reply.get("upserted") or ())
    if command_name == "findAndModify":
        return int((reply.get("lastErrorObject") or {}).get("n", 0) or 0)
    return 0


def _count_publish() -> None:
    with _state["lock"]:
        _state["publishes"] += 1


def _record_publish(body: Any) -> None:
    """``<first message arg>\t<now>`` to this process's publishes file."""
    at = time.time()
    found = _FIRST_ARG.search(body) if isinstance(body, (bytes, bytearray)) else None
    if found is None:
        return
    fd = _state["publish_fd"]
    if fd is None:
        with _state["lock"]:
            if _state["publish_fd"] is None:
                path = os.path.join(_state["dir"], f"publishes-{os.getpid()}.tsv")
                _state["publish_fd"] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fd = _state["publish_fd"]
    os.write(fd, found.group(1) + f"\t{at:.6f}\n".encode())


def snapshot() -> dict[str, Any]:
    with _state["lock"]:
        return {"pid": os.getpid(), "at": time.time(), "commands": dict(_state["commands"]),
                "publishes": _state["publishes"], "docs_written": _state["docs_written"]}


def dump() -> None:
    if _state.get("pid") != os.getpid():
        return
    path = Path(_state["dir"]) / f"probe-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot()))
    os.replace(tmp, path)


def _dump_forever() -> None:
    while True:
        time.sleep(DUMP_S)
        try:
            dump()
        except Exception:  # the directory may be gone at the very end of a scenario
            pass


def install(directory: str) -> None:
    from pymongo import monitoring

    class CommandCounter(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = event.command.get(event.command_name)
            if not isinstance(target, str):
                target = event.command.get("collection", "")
            _count_command(f"{event.command_name} {target}" if isinstance(target, str) and target else event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            docs = written_by(event.command_name, event.reply)
            if docs:
                _count_written(docs)

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    monitoring.register(CommandCounter())
    _wrap_pika_publish()
    _wrap_pika_async_publish()
    _state["dir"] = directory
    _reset()
    os.register_at_fork(after_in_child=_reset)
    atexit.register(dump)


def _wrap_pika_publish() -> None:
    from pika.adapters.blocking_connection import BlockingChannel

    original = BlockingChannel.basic_publish

    def basic_publish(self: Any, *args: Any, **kwargs: Any) -> Any:
        _count_publish()
        result = original(self, *args, **kwargs)
        _record_publish(kwargs.get("body", args[2] if len(args) > 2 else None))
        return result

    BlockingChannel.basic_publish = basic_publish  # type: ignore[method-assign]


def _record_confirmed(run_id: str) -> None:
    _record_publish(b'"args":["' + run_id.encode() + b'"')


def _wrap_pika_async_publish() -> None:
    import sys

    from pika.channel import Channel

    original = Channel.basic_publish

    def basic_publish(self: Any, *args: Any, **kwargs: Any) -> Any:
        _count_publish()
        if "cronhive.confirms" in sys.modules and not _state.get("confirms_wrapped"):
            _wrap_confirms(sys.modules["cronhive.confirms"])
        return original(self, *args, **kwargs)

    Channel.basic_publish = basic_publish  # type: ignore[method-assign]


def _wrap_confirms(module: Any) -> None:
    """Record the confirm instant of each run a pipelined batch settles as confirmed."""
    _state["confirms_wrapped"] = True
    batch_class = module.Batch
    settle, settle_up_to = batch_class.settle, batch_class.settle_up_to

    def runs_of(batch: Any) -> dict[str, str]:
        known = getattr(batch, "_probe_runs", None)
        if known is None:
            known = {message.message_id: str(message.args[0]) for message in batch.messages if message.args}
            batch._probe_runs = known
        return known

    def settle_wrapped(self: Any, tag: int, ok: bool) -> None:
        message_id = self.outstanding.get(tag)
        settle(self, tag, ok)
        if ok and message_id is not None and message_id in runs_of(self):
            _record_confirmed(runs_of(self)[message_id])

    def settle_up_to_wrapped(self: Any, tag: int, ok: bool) -> None:
        ids = [message_id for pending, message_id in list(self.outstanding.items()) if pending <= tag]
        settle_up_to(self, tag, ok)
        if ok:
            runs = runs_of(self)
            for message_id in ids:
                if message_id in runs:
                    _record_confirmed(runs[message_id])

    batch_class.settle = settle_wrapped
    batch_class.settle_up_to = settle_up_to_wrapped


class ProbeWindow:
    """The probe counters of every process at a window's start and end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.start: dict[int, dict[str, Any]] = {}
        self.end: dict[int, dict[str, Any]] = {}

    def open(self) -> None:
        self.start = read_all(self.directory)

    def close(self) -> None:
        self.end = read_all(self.directory)

    def deltas(self) -> dict[int, tuple[Counter[str], int]]:
        """pid -> (commands by name, publishes) during the window."""
        result = {}
        for pid, last in self.end.items():
            first = self.start.get(pid, {"commands": {}, "publishes": 0})
            commands = Counter(last["commands"])
            commands.subtract(first["commands"])
            result[pid] = (+commands, last["publishes"] - first["publishes"])
        return result

    def docs_written(self) -> dict[int, int]:
        """pid -> documents written during the window."""
        return {pid: last.get("docs_written", 0) - self.start.get(pid, {}).get("docs_written", 0)
                for pid, last in self.end.items()}


def publishes_between(directory: Path, start: float, end: float) -> dict[int, int]:
    """pid -> publishes confirmed in ``[start, end)``, from the publish records."""
    counts: dict[int, int] = {}
    for path in directory.glob("publishes-*.tsv"):
        pid = int(path.stem.split("-", 1)[1])
        for line in path.read_bytes().splitlines():
            try:
                at = float(line.rpartition(b"\t")[2])
            except ValueError:
                continue
            if start <= at < end:
                counts[pid] = counts.get(pid, 0) + 1
    return counts


def read_publishes(directory: Path) -> dict[str, float]:
    """run id -> the instant of its first confirmed publish, over every process."""
    first: dict[str, float] = {}
    for path in directory.glob("publishes-*.tsv"):
        for line in path.read_bytes().splitlines():
            run_id, _, stamp = line.decode(errors="replace").partition("\t")
            try:
                at = float(stamp)
            except ValueError:
                continue
            if run_id not in first or at < first[run_id]:
                first[run_id] = at
    return first


def read_all(directory: Path) -> dict[int, dict[str, Any]]:
    """The latest dump of every process that wrote one: pid -> snapshot."""
    found: dict[int, dict[str, Any]] = {}
    for path in directory.glob("probe-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        found[int(data["pid"])] = data
    return found
