"""Handlers for the worker tests, loaded by worker processes through
``HANDLER_MODULES=tests.worker.handlers_for_tests``.

``record`` appends one JSON line when it starts and one when it ends to
``args.file`` (O_APPEND: lines from several processes never interleave), so a
test counts real executions. It sleeps ``args.seconds`` in short slices (so the
Dramatiq time limit and lease-loss interrupts can stop it between slices) and
raises while ``ctx.attempt <= args.fail_attempts``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from cronhive import HandlerContext, handler

SLICE_S = 0.05


class FlakyFailure(Exception):
    """Raised by ``record`` for its first ``fail_attempts`` attempts."""


def append_event(path: str, event: str, ctx: HandlerContext) -> None:
    line = json.dumps({"event": event, "run_id": ctx.run_id, "job_id": ctx.job_id, "attempt": ctx.attempt,
                       "pid": os.getpid(), "t": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@handler("record")
def record(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Records its start and end in ``args.file``; sleeps ``args.seconds``; fails early attempts."""
    path = args["file"]
    append_event(path, "start", ctx)
    deadline = time.monotonic() + float(args.get("seconds", 0))
    while time.monotonic() < deadline:
        time.sleep(min(SLICE_S, max(0.0, deadline - time.monotonic())))
    if ctx.attempt <= int(args.get("fail_attempts", 0)):
        append_event(path, "fail", ctx)
        raise FlakyFailure(f"attempt {ctx.attempt} fails on purpose")
    append_event(path, "end", ctx)


def read_events(path: str) -> list[dict[str, Any]]:
    """The events the ``record`` handler wrote (none when it never ran)."""
    if not os.path.exists(path):
        return []
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.strip()]
