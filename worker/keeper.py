"""Lease renewal for the attempts a worker process is running.

One daemon thread per process renews every running attempt's lease at a third
of the lease duration (`cronhive.leases.renew_interval`), so a handler that runs
longer than the lease keeps it. Renewal is conditioned on holder and token and
on the lease not having expired (database clock): a worker that was stalled past
expiry cannot revive its lease. When a renewal finds the lease gone the attempt
is marked ``lost`` and, if its handler is still running, interrupted with
`LeaseLostInterrupt` (best effort: an interrupt lands when the thread next runs
Python code, so a handler blocked in a system call finishes that call first).
Its later writes are rejected by fencing either way.

The same thread looks every `CANCEL_POLL_S` (one query for all of them) whether a
running attempt's run was asked to stop (``cancel_requested``, set by
``POST /runs/:run_id/cancel``) and interrupts its handler with
`RunCancelledInterrupt` (Dramatiq's ``raise_thread_exception``, as its time limit
does); the middleware records the run ``cancelled`` and frees the lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from dramatiq.middleware import raise_thread_exception

from cronhive import metrics
from cronhive.clock import Clock
from cronhive.errors import Unavailable
from cronhive.leases import renew_interval
from cronhive.store.protocols import KeeperStore
from cronhive.worker.attempts import Attempt, LeaseLostInterrupt, RunCancelledInterrupt
from cronhive.worker.outages import StoreOutages

log = logging.getLogger("cronhive.worker.keeper")

#: How often the running attempts' runs are checked for a cancel request.
CANCEL_POLL_S = 1.0


class LeaseKeeper:
    """Keeps the leases of this process's running attempts alive."""

    def __init__(self, store: KeeperStore, clock: Clock, lease_s: float, outages: StoreOutages | None = None) -> None:
        self.store = store
        self.clock = clock
        self.lease_s = lease_s
        #: what this process saw of MongoDB outages (`cronhive.worker.outages`): renewals tell
        self.outages = outages or StoreOutages(lease_s)
        #: the last renewal (or cancel check) found MongoDB unavailable
        self._store_down = False
        self._attempts: dict[str, Attempt] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- thread -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        every = renew_interval(self.lease_s)
        tick = min(every, CANCEL_POLL_S)
        next_renewal = time.monotonic() + every
        while not self._stop.wait(tick):
            if time.monotonic() >= next_renewal:  # renewals first: a cancel check must never delay one
                next_renewal = time.monotonic() + every
                try:
                    self.renew_all(self.clock.now())
                except Exception:  # the keeper must outlive any one bad renewal
                    log.exception("lease renewal pass failed")
            if self._store_down:  # no cancel checks while MongoDB is away (each would wait its timeout)
                continue
            try:
                self.check_cancels()
            except Exception:  # the keeper must outlive any one bad pass
                log.exception("cancel check failed")

    # -- attempts ---------------------------------------------------------------

    def track(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts[attempt.lease.holder] = attempt

    def forget(self, attempt: Attempt) -> None:
        """Stop renewing (the attempt is finishing); from now on it is never interrupted."""
        with self._lock:
            attempt.finished = True
            attempt.in_handler = False
            self._attempts.pop(attempt.lease.holder, None)

    def tracked(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts.values())

    @contextmanager
    def handler_running(self, attempt: Attempt) -> Iterator[None]:
        """The span in which a lost lease interrupts the handler's thread."""
        with self._lock:
            if attempt.lost:
                raise LeaseLostInterrupt()
            if attempt.cancelled:
                raise RunCancelledInterrupt()
            attempt.in_handler = True
        try:
            yield
        finally:
            with self._lock:
                attempt.in_handler = False

    # -- renewal ----------------------------------------------------------------

    def renew_all(self, now: datetime) -> list[Attempt]:
        """Renew every tracked attempt's lease at ``now``; returns those found lost."""
        lost = [attempt for attempt in self.tracked() if not self.renew(attempt, now)]
        for attempt in lost:
            self._mark_lost(attempt)
        return lost

    def renew(self, attempt: Attempt, now: datetime) -> bool:
        """Extend one lease; False when it is gone (expired, taken over or released)."""
        try:
            renewed = self.store.renew_lease(attempt.lease, self.lease_s, now)
            self._store_down = False
            self.outages.answered(now)
        except Unavailable:
            self._store_down = True
            self.outages.unreachable()
            metrics.LEASE_RENEW_FAILURES.inc()
            still_valid = attempt.lease.expires_at > now
            log.warning("could not renew the lease (MongoDB unavailable)%s",
                        "" if still_valid else "; it has expired", extra=attempt.log_extra())
            return still_valid
        if renewed is None:
            metrics.LEASE_RENEW_FAILURES.inc()
            return False
        attempt.lease = renewed
        return True

    def check_cancels(self) -> list[Attempt]:
        """Interrupt the handlers of tracked attempts whose run was asked to stop (one
        query; none while nothing runs). Returns those asked."""
        attempts = [attempt for attempt in self.tracked() if not attempt.cancelled]
        if not attempts:
            return []
        try:
            asked = self.store.cancel_requested_among([attempt.run_id for attempt in attempts])
        except Unavailable:
            self._store_down = True  # until the next renewal reaches MongoDB
            self.outages.unreachable()
            return []
        cancelled = [attempt for attempt in attempts if attempt.run_id in asked]
        for attempt in cancelled:
            self._cancel(attempt)
        return cancelled

    def _cancel(self, attempt: Attempt) -> None:
        with self._lock:
            if attempt.finished or attempt.cancelled:
                return
            attempt.cancelled = True
            interrupt = attempt.in_handler
            if interrupt:
                raise_thread_exception(attempt.thread_id, RunCancelledInterrupt)  # type: ignore[no-untyped-call]
        log.info("cancel requested%s", "; interrupting the handler" if interrupt else "", extra=attempt.log_extra())

    def _mark_lost(self, attempt: Attempt) -> None:
        with self._lock:
            if attempt.finished or attempt.lease.holder not in self._attempts:
                return
            attempt.lost = True
            self._attempts.pop(attempt.lease.holder, None)
            interrupt = attempt.in_handler
            if interrupt:
                raise_thread_exception(attempt.thread_id, LeaseLostInterrupt)  # type: ignore[no-untyped-call]
        log.warning("lease lost while the handler ran%s", "; interrupting it" if interrupt else "",
                    extra=attempt.log_extra())
