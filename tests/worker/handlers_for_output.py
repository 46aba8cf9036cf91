"""A handler for the output, log and notification tests, loaded by worker processes
through ``HANDLER_MODULES=tests.worker.handlers_for_output``.

``emit`` logs each of ``args.lines`` through ``ctx.logger`` at INFO, raises when
``args.fail`` is true, and returns ``args.value`` (the run's output)."""

from __future__ import annotations

from typing import Any

from cronhive import HandlerContext, handler


class EmitFailed(Exception):
    """Raised by ``emit`` when ``args.fail`` is true."""


@handler("emit")
def emit(args: dict[str, Any], ctx: HandlerContext) -> Any:
    """Logs args.lines, fails when args.fail, returns args.value."""
    for line in args.get("lines", []):
        ctx.logger.info("%s", line)
    if args.get("fail"):
        raise EmitFailed(str(args.get("message", "failing on purpose")))
    return args.get("value")
