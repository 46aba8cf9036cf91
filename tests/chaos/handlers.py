"""Handlers of the chaos suite (``HANDLER_MODULES=tests.chaos.handlers``).

Each execution appends one JSON line per event to a file of its own process in
``CHAOS_EXEC_DIR`` — files, not MongoDB, so executions are recorded while the
store is down — which the audit reads back: ``start`` and ``end`` of every
handler call with the run, attempt, fencing token and instants.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from cronhive import HandlerContext, handler


def _record(event: str, ctx: HandlerContext, **more: Any) -> None:
    directory = Path(os.environ["CHAOS_EXEC_DIR"])
    line = json.dumps({"event": event, "run_id": ctx.run_id, "job_id": ctx.job_id, "attempt": ctx.attempt,
                       "scheduled_for": ctx.scheduled_for.isoformat() if ctx.scheduled_for else None,
                       "trigger": str(ctx.trigger), "at": time.time(), "pid": os.getpid(), **more})
    fd = os.open(directory / f"exec-{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))  # short slices: interrupts (time limit, lost lease) land


@handler("chaos_work")
def work(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Records its start, works ``args.seconds`` (default 0.2), records its end."""
    _record("start", ctx)
    try:
        _sleep(float(args.get("seconds", 0.2)))
    finally:
        _record("end", ctx)


@handler("chaos_die_after")
def die_after(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Works, records its end, then SIGKILLs its own worker process on the attempts
    listed in ``args.die_on_attempts`` (default [1]): the handler's work is done but
    its outcome is never recorded by this process."""
    _record("start", ctx)
    _sleep(float(args.get("seconds", 0.2)))
    _record("end", ctx)
    if ctx.attempt in args.get("die_on_attempts", [1]):
        os.kill(os.getpid(), signal.SIGKILL)


@handler("chaos_die_after_return")
def die_after_return(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Works, records its end and returns — and on the attempts listed in
    ``args.die_on_attempts`` (default [1]) its worker process is SIGKILLed a few
    milliseconds later, while the process's outcome writer may still hold the outcome
    (`cronhive.worker.outcomes`): it lands, or the run is resolved as if the process
    had died in the handler — never both, never run twice at once."""
    _record("start", ctx)
    _sleep(float(args.get("seconds", 0.2)))
    _record("end", ctx)
    if ctx.attempt in args.get("die_on_attempts", [1]):
        killer = threading.Timer(float(args.get("kill_after_s", 0.005)), os.kill, (os.getpid(), signal.SIGKILL))
        killer.daemon = True
        killer.start()
