"""Handler start records: the one measuring method every system under test uses.

A benchmark handler calls `record_start(job)` as its first statement. It takes
``time.time()`` first, then appends one line ``<job>\\t<epoch seconds>\\n`` with a
single ``os.write`` to ``starts-<pid>.tsv`` in the directory named by the
``BENCH_RECORD_DIR`` environment variable (read on the first call, never at
import). The file is opened ``O_APPEND`` once per process, so the cost is one
small syscall per start — no network round trip, no lock held across threads
beyond the first open — which keeps the recording from skewing what it measures
(a durable MongoDB insert per start would serialise handlers on ~1 ms commits).

Standard library only: the peers' virtualenv imports it too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ENV_RECORD_DIR = "BENCH_RECORD_DIR"
#: what a process under test prints (to stdout or stderr) once it is ready to run the herd
READY_MARKER = "BENCH-READY"

_lock = threading.Lock()
_fd: int | None = None
_fd_pid: int | None = None


def _record_fd() -> int:
    """The process's append-only record file, opened on first use (and again after a fork)."""
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is not None and _fd_pid == pid:
        return _fd
    with _lock:
        if _fd is None or _fd_pid != pid:
            directory = os.environ.get(ENV_RECORD_DIR)
            if not directory:
                raise RuntimeError(f"{ENV_RECORD_DIR} is not set: the benchmark harness sets it for every process it starts")
            path = os.path.join(directory, f"starts-{pid}.tsv")
            _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fd_pid = pid
    return _fd


def record_start(job: str) -> float:
    """Record that ``job``'s handler starts now; returns the instant recorded."""
    started_at = time.time()
    os.write(_record_fd(), f"{job}\t{started_at:.6f}\n".encode())
    return started_at


@dataclass
class StartsReader:
    """Reads the start records of a directory incrementally (only whole new lines)."""

    directory: Path
    _offsets: dict[Path, int] = field(default_factory=dict)

    def read_new(self) -> Iterator[tuple[str, float]]:
        for path in sorted(self.directory.glob("starts-*.tsv")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            end = chunk.rfind(b"\n") + 1
            self._offsets[path] = offset + end
            for line in chunk[:end].splitlines():
                job, _, stamp = line.decode().partition("\t")
                yield job, float(stamp)
