"""The ``execute_run`` actor: the handler call, and nothing else.

Everything around it — the lease, fencing, the time limit, recording, retries —
is done by `worker.middleware.RunLifecycle`, which started the attempt this
thread now runs (`current_attempt`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cronhive.handlers import HandlerRegistry
from cronhive.worker.attempts import current_attempt
from cronhive.worker.keeper import LeaseKeeper

handler_log = logging.getLogger("cronhive.handler")


class NoAttempt(RuntimeError):
    """The actor was called for a run the middleware did not start (never run the handler then)."""


def make_execute_run(registry: HandlerRegistry, keeper: LeaseKeeper) -> Callable[..., None]:
    """The actor function, bound to the process's handler registry and lease keeper."""

    def execute_run(run_id: str, job_id: str | None = None) -> None:
        """Execute one attempt of ``run_id``: look the job's handler up and call it; its
        return value is kept on the attempt, to be the run's ``output`` (recorded by
        `RunLifecycle`; the actor itself returns nothing, as Dramatiq expects without a
        results backend)."""
        attempt = current_attempt()
        if attempt is None or attempt.run_id != run_id:
            raise NoAttempt(f"no leased attempt for run {run_id!r}")
        handler = registry.get(attempt.handler)
        with keeper.handler_running(attempt):
            attempt.result = handler(attempt.args, attempt.context(handler_log))

    return execute_run
