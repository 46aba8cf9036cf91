"""The handler registry: job handlers are Python callables registered by name.

Built in: ``noop``, ``sleep`` (``args.seconds``), ``fail`` (raises),
``http`` (calls a URL: `cronhive.http_calls`) and ``reminder_scheduler`` (the
seed's example, a demo). A deployment adds its own
with the `handler` decorator in modules named by ``HANDLER_MODULES``::

    from cronhive import handler

    @handler("send_report")
    def send_report(args, ctx):
        ...

A handler is called as ``fn(args, ctx)``: ``args`` is the job's JSON object,
``ctx`` a `HandlerContext`. Its return value, if JSON, is the run's ``output``
(`cronhive.run_output`); what it logs through ``ctx.logger`` is the run's
``log``; raising fails the run (an exception with a string ``error_type``
attribute names the run's ``error.type``, else its class name does).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cronhive.errors import ConfigurationError, ValidationError
from cronhive.http_calls import DestinationGuard, run_http

log = logging.getLogger("cronhive.handlers")


@dataclass(frozen=True)
class HandlerContext:
    """What a handler is told about the attempt it runs.

    ``attempt`` is the run's attempt number (1 for the first, +1 for each retry
    or recovery). ``fencing_token`` is the token of the lease this attempt holds
    (the run's ``lease_token``): each attempt gets a larger one than every
    attempt before it that held the same lease — the job's lease under
    ``overlap_policy`` ``forbid`` and ``buffer_one`` (so across all runs of the
    job), the run's own under ``allow`` (across the attempts of that run). A
    downstream system that keeps the largest token it has seen (per job, or per
    run under ``allow``) and refuses writes carrying a smaller one shuts out an
    attempt that lost its lease while paused (README, "Fencing downstream writes")."""

    job_id: str
    run_id: str
    attempt: int
    scheduled_for: datetime | None
    trigger: str
    logger: logging.Logger
    fencing_token: int


Handler = Callable[[dict[str, Any], HandlerContext], Any]


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, fn: Handler) -> Handler:
        if name in self._handlers and self._handlers[name] is not fn:
            raise ConfigurationError(f"handler {name!r} is registered twice")
        self._handlers[name] = fn
        return fn

    def get(self, name: str) -> Handler:
        try:
            return self._handlers[name]
        except KeyError:
            raise ValidationError(f"unknown handler {name!r}", details={"handler": [f"unknown handler {name!r}"]}) from None

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers


registry = HandlerRegistry()


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` under ``name`` in the process's handler registry."""

    def decorate(fn: Handler) -> Handler:
        return registry.register(name, fn)

    return decorate


def load_handler_modules(modules: Iterable[str]) -> HandlerRegistry:
    """Import the deployment's handler modules (``HANDLER_MODULES``) once."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ConfigurationError:
            raise
        except Exception as exc:  # ImportError, but also a module that is broken or raises while importing
            raise ConfigurationError(f"HANDLER_MODULES: cannot import {module!r}: {type(exc).__name__}: {exc}") from exc
    return registry


class HandlerFailed(Exception):
    """Raised by the built-in ``fail`` handler."""


@handler("noop")
def noop(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Does nothing: the cheapest run, for tests and benchmarks."""


@handler("sleep")
def sleep(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Sleeps ``args.seconds`` (default 1) seconds."""
    seconds = args.get("seconds", 1)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError(f"sleep: args.seconds must be a non-negative number, got {seconds!r}")
    deadline = time.monotonic() + float(seconds)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))  # short slices let the time limit and lease-loss interrupts land


@handler("fail")
def fail(args: dict[str, Any], ctx: HandlerContext) -> None:
    """Always raises (``args.message`` is the error message)."""
    raise HandlerFailed(str(args.get("message", "the fail handler always fails")))


_http_guard = [DestinationGuard()]


def configure_http_handler(guard: DestinationGuard) -> None:
    """The destination guard the ``http`` handler calls under (HTTP_HANDLER_ALLOWED_HOSTS;
    the worker's start step sets it; until then only public addresses may be called)."""
    _http_guard[0] = guard


@handler("http")
def http(args: dict[str, Any], ctx: HandlerContext) -> dict[str, Any]:
    """Calls args.url (method, headers, JSON body, expect_status, timeout_s); the response is the run's output."""
    started = time.monotonic()
    try:
        output = run_http(args, _http_guard[0])
    except Exception as exc:
        ctx.logger.warning("%s %s failed after %d ms: %s", str(args.get("method", "POST")).upper(), args.get("url"),
                           int((time.monotonic() - started) * 1000), exc)
        raise
    ctx.logger.info("%s %s answered %s in %d ms", str(args.get("method", "POST")).upper(), args.get("url"),
                    output["status"], int((time.monotonic() - started) * 1000))
    return output


@handler("reminder_scheduler")
def reminder_scheduler(args: dict[str, Any], ctx: HandlerContext) -> dict[str, Any]:
    """The seed's example, a demo: logs the reminder check it would do."""
    due_before = ctx.scheduled_for.isoformat() if ctx.scheduled_for else None
    ctx.logger.info(
        "reminder check: would scan for reminders due before %s and notify their owners",
        due_before,
        extra={"job_id": ctx.job_id, "run_id": ctx.run_id},
    )
    return {"checked_before": due_before}
