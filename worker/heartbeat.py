"""The worker process's heartbeat (`cronhive.heartbeats`): a Dramatiq middleware.

Once the worker process has booted, a daemon thread upserts its heartbeat every
`HEARTBEAT_S` seconds: name (``hostname:pid``), queue, threads, handlers, the
messages it is processing now and the number it has processed. A missed beat
(MongoDB unreachable) is logged once and retried at the next interval; the
worker keeps running runs either way. On a clean shutdown the heartbeat is
deleted; a killed process's heartbeat expires after `HEARTBEAT_TTL_S`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from dramatiq import Broker
from dramatiq.middleware import Middleware

from cronhive import heartbeats
from cronhive.clock import Clock
from cronhive.errors import Unavailable
from cronhive.heartbeats import HEARTBEAT_S, WorkerBeat
from cronhive.store import MongoStore

log = logging.getLogger("cronhive.worker.heartbeat")


class WorkerHeartbeat(Middleware):
    """Writes this worker process's heartbeat while it runs."""

    def __init__(self, store: MongoStore, clock: Clock, *, worker: str, queue: str, handlers: list[str],
                 interval_s: float = HEARTBEAT_S) -> None:
        self.store = store
        self.clock = clock
        self.worker = worker
        self.queue = queue
        self.handlers = tuple(handlers)
        self.interval_s = interval_s
        self.threads = 0
        self._in_progress = 0
        self._processed = 0
        self._counts = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    # -- what a beat reports ---------------------------------------------------

    def report(self) -> WorkerBeat:
        with self._counts:
            in_progress, processed = self._in_progress, self._processed
        hostname, _, pid = self.worker.rpartition(":")
        return WorkerBeat(worker=self.worker, hostname=hostname or socket.gethostname(),
                          pid=int(pid) if pid.isdigit() else os.getpid(), queue=self.queue, threads=self.threads,
                          handlers=self.handlers, in_progress=in_progress, processed=processed)

    def beat_once(self) -> bool:
        """Write one beat; False (logged once per outage) when MongoDB is unreachable."""
        try:
            heartbeats.beat(self.store, self.report(), self.clock.now())
        except Unavailable as exc:
            if not self._failing:
                log.warning("worker heartbeat not written: %s", exc.message, extra={"worker": self.worker})
            self._failing = True
            return False
        if self._failing:
            log.info("worker heartbeat written again", extra={"worker": self.worker})
        self._failing = False
        return True

    def _run(self) -> None:
        while True:
            try:
                self.beat_once()
            except Exception:
                log.exception("worker heartbeat failed", extra={"worker": self.worker})
            if self._stop.wait(self.interval_s):
                return

    # -- Dramatiq hooks ----------------------------------------------------------

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.threads = int(getattr(worker, "worker_threads", 0) or 0)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
        try:
            heartbeats.remove(self.store, self.worker)
        except Unavailable as exc:
            log.warning("worker heartbeat not removed (it expires by itself): %s", exc.message,
                        extra={"worker": self.worker})

    def before_process_message(self, broker: Broker, message: Any) -> None:
        with self._counts:
            self._in_progress += 1

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        with self._counts:
            self._in_progress = max(0, self._in_progress - 1)
            self._processed += 1

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        with self._counts:
            self._in_progress = max(0, self._in_progress - 1)
