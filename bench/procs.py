"""The processes a benchmark starts: each in its own process group, always stopped.

`ProcessGroup` is a context manager: every process started through it is
stopped on the way out — even on errors or Ctrl-C — with SIGTERM to its whole
process group (dramatiq's and Celery's children included), then SIGKILL to
whatever is left after a grace period. Only the groups this harness created
are signalled, by their ids.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger("bench.procs")


@dataclass
class Managed:
    """One started process (and its process group), its output in ``log_path``."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, marker: str) -> int:
        return self.output().count(marker)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class ProcessGroup:
    """Starts processes and guarantees they are all stopped when the block ends."""

    def __init__(self, term_grace_s: float = 10.0) -> None:
        self.term_grace_s = term_grace_s
        self.processes: list[Managed] = []

    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> Managed:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as output:
            popen = subprocess.Popen(
                list(argv), env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
        managed = Managed(name=name, popen=popen, log_path=log_path)
        self.processes.append(managed)
        log.debug("started %s (pid %d): %s", name, popen.pid, " ".join(argv))
        return managed

    def dead(self) -> list[Managed]:
        return [process for process in self.processes if not process.alive()]

    def stop_all(self) -> None:
        """SIGTERM every group, wait up to the grace period, then SIGKILL the rest."""
        for process in self.processes:
            process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.term_grace_s
        for process in self.processes:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", process.name, process.pid, self.term_grace_s)
        for process in self.processes:
            # the group may still hold children even when its leader has exited
            process.signal_group(signal.SIGKILL)
            if process.alive():
                process.popen.wait()
        self.processes.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()


def raise_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so every ``finally`` (process and queue cleanup) runs."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
