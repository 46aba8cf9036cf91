"""What one worker process has seen of MongoDB being unreachable, and the grace after.

A lease that expired while MongoDB could not be reached says nothing of its worker:
nobody could renew a lease then, and an attempt that ended meanwhile keeps its
outcome and writes it as soon as MongoDB answers (`RunLifecycle.finish_kept`). So a
process that saw MongoDB unreachable resolves no attempt whose lease expired — its
reaper abandons or re-publishes none, a delivery of such a run neither abandons it
nor starts an attempt in its place (it waits) — while MongoDB is unreachable and for
one lease after it answered this process again: the live worker has a whole lease
from MongoDB's return to write its outcome, whatever the moment its own retries
reach it. A dead attempt's run is resolved that much later.

Every worker process notices an outage long enough to expire a lease: its reaper
thread reaches MongoDB every third of a lease (`worker.maintenance`), and its keeper
does while attempts run (`worker.keeper`).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class StoreOutages:
    """The process's record of MongoDB outages (thread-safe; instants of its clock)."""

    def __init__(self, lease_s: float) -> None:
        self.lease = timedelta(seconds=lease_s)
        self._lock = threading.Lock()
        self._down = False
        self._grace_until: datetime | None = None

    def unreachable(self) -> None:
        """A call to MongoDB found it unreachable."""
        with self._lock:
            self._down = True

    def answered(self, now: datetime) -> bool:
        """A call to MongoDB was answered at ``now``; True when that ends an outage (the
        grace runs from here)."""
        with self._lock:
            if not self._down:
                return False
            self._down = False
            self._grace_until = now + self.lease
            return True

    def holding_until(self, now: datetime) -> datetime | None:
        """Until when, seen at ``now``, attempts whose lease expired are left to their
        workers: a lease after MongoDB answered again (while it is unreachable: a lease
        from ``now``); None when they are not."""
        with self._lock:
            if self._down:
                return now + self.lease
            if self._grace_until is not None and now < self._grace_until:
                return self._grace_until
            return None
