"""Clocks. Logic never calls ``now()`` itself: it is handed an instant, read from
a clock the process owns.

`DatabaseClock` is the one clock lease expiry is decided on: the local clock
corrected by its measured offset to MongoDB's clock (``hello.localTime``,
midpoint of the round trip), re-measured every `RESYNC_S` seconds. Hosts whose
own clocks disagree therefore agree on when a lease expires, to within the
round-trip time. Tests substitute a clock they move by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Protocol

from cronhive.domain import utcnow, whole_ms

log = logging.getLogger("cronhive.clock")

RESYNC_S = 300.0
#: After a failed measurement, wait this long before trying again (MongoDB down).
RETRY_S = 10.0


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class ServerTimeSource(Protocol):
    def server_time(self) -> datetime: ...


class DatabaseClock:
    """Local time plus the offset to the database's clock."""

    def __init__(self, source: ServerTimeSource, resync_s: float = RESYNC_S) -> None:
        self.source = source
        self.resync_s = resync_s
        self.offset = timedelta(0)
        self._synced_at: float | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def sync(self) -> timedelta:
        """Measure the offset now (raises `StoreUnavailable` when MongoDB is down)."""
        before = utcnow()
        server = self.source.server_time()
        after = utcnow()
        offset = server - (before + (after - before) / 2)
        with self._lock:
            self.offset = offset
            self._synced_at = time.monotonic()
            self._failed_at = None
        if abs(offset) > timedelta(seconds=1):
            log.warning("local clock is %.3f s off the database clock; using the database's", offset.total_seconds())
        return offset

    def _due_for_sync(self) -> bool:
        mono = time.monotonic()
        if self._failed_at is not None and mono - self._failed_at < RETRY_S:
            return False
        return self._synced_at is None or mono - self._synced_at > self.resync_s

    def now(self) -> datetime:
        if self._due_for_sync():
            try:
                self.sync()
            except Exception:  # keep the last offset while MongoDB is unreachable
                self._failed_at = time.monotonic()
                log.debug("could not re-measure the database clock", exc_info=True)
        return whole_ms(utcnow() + self.offset)
