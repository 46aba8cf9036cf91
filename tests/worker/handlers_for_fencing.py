"""Handlers for the fencing and failure-reporting tests, loaded by worker processes
through ``HANDLER_MODULES=tests.worker.handlers_for_fencing``.

``fence_probe`` appends what its context says (attempt, fencing token) to
``args.file`` and fails its first ``args.fail_attempts`` attempts.
``fenced_write`` sleeps, then writes to a downstream MongoDB collection fenced
by its token exactly as the README shows, and records whether the write was
applied or refused.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from cronhive import HandlerContext, handler

SLICE_S = 0.05


class ProbeFailure(Exception):
    """Raised by ``fence_probe`` for its first ``fail_attempts`` attempts."""


def append(path: str, **event: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({**event, "pid": os.getpid(), "t": time.time()}) + "\n").encode())
    finally:
        os.close(fd)


def read(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.strip()]


@handler("fence_probe")
def fence_probe(args: dict[str, Any], ctx: HandlerContext) -> None:
    append(args["file"], run_id=ctx.run_id, job_id=ctx.job_id, attempt=ctx.attempt, fencing_token=ctx.fencing_token)
    if ctx.attempt <= int(args.get("fail_attempts", 0)):
        raise ProbeFailure(f"attempt {ctx.attempt} fails on purpose")


def fenced_update(collection: Any, key: str, token: int, values: dict[str, Any]) -> bool:
    """The README's pattern: write only if no write with this token or a newer one happened.
    True if applied, False if a newer holder already wrote (this one was fenced off)."""
    try:
        collection.update_one({"_id": key, "fencing_token": {"$lt": token}},
                              {"$set": {"fencing_token": token, **values}}, upsert=True)
    except DuplicateKeyError:  # the document exists with a token >= ours: we are stale
        return False
    return True


@handler("fenced_write")
def fenced_write(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Sleeps ``args.seconds[attempt - 1]``, then writes downstream fenced on its token.

    It swallows whatever interrupts its sleep — as a handler blocked in a system
    call or a C extension effectively does — and writes anyway: only the fence
    keeps such a write of an attempt that lost its lease out."""
    seconds = float(args["seconds"][min(ctx.attempt, len(args["seconds"])) - 1])
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(SLICE_S)
    except BaseException as exc:  # the lease-loss interrupt of a stale attempt
        append(args["file"], event="interrupted", run_id=ctx.run_id, attempt=ctx.attempt, error=type(exc).__name__)
    append(args["file"], event="writing", run_id=ctx.run_id, attempt=ctx.attempt, fencing_token=ctx.fencing_token)
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000)
    try:
        collection = client[os.environ["MONGODB_DB"]]["downstream"]
        applied = fenced_update(collection, ctx.job_id, ctx.fencing_token,
                                {"run_id": ctx.run_id, "attempt": ctx.attempt})
    finally:
        client.close()
    append(args["file"], event="applied" if applied else "refused", run_id=ctx.run_id, attempt=ctx.attempt,
           fencing_token=ctx.fencing_token)
