"""Leader election on the MongoDB leader lease (SPEC §5).

One lease document (``leases``, ``_id`` `cronhive.store.LEADER_LEASE_ID`) decides
who publishes. Every scheduler process runs a `Leadership`; the loop calls
`Leadership.maintain` with the database clock's ``now`` whenever
`Leadership.next_action_at` has come:

* **Standby**: tries to claim the lease (a named lease, created on its first claim:
  free, expired or already ours) every renew interval (a third of ``LEADER_LEASE_S``),
  and sooner — right at the current lease's expiry — when that comes first. So a
  dead leader is replaced within the lease duration plus at most one renew
  interval.
* **Leader**: renews at every renew interval — from `maintain` between passes
  and from `guard` within one (before each write batch and publish), so a long
  pass keeps the lease while each of its steps is short, and a leader stuck in
  one step loses it. The lease token is the leader's *term*, a fencing token
  that only grows: every write the leader makes carries it (see the
  `cronhive.store.scheduling`).
* **Local deadline**: a leader counts as leader only until ``expires_at`` minus a
  safety margin (`margin_for`), on its own reading of the database clock. Past
  it — renewals failing, or the process was paused (SIGSTOP, a long GC) — it
  stops publishing and writing at once (`guard` raises `LeadershipLost`) and
  steps down, before any standby can have claimed the lease. The margin covers
  the clock offset between hosts (bounded by the round trip `DatabaseClock`
  measured) and the time between a check and the write or publish it guards.
* **Heartbeat**: every process upserts ``schedulers/{holder}`` with ``expires_at``
  each renew interval, so ``GET /api/v1/cron/scheduler`` lists live standbys.
* **Resign** (SIGTERM): release the lease (so a standby takes over at its next
  attempt instead of waiting for expiry) and delete the heartbeat.

Nothing here sleeps or reads a clock: tests drive it with hand-moved instants.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import Enum

from cronhive.domain import Heartbeat
from cronhive.enums import LeaseScope, SchedulerRole
from cronhive.errors import Unavailable
from cronhive.leases import Lease, renew_interval
from cronhive.store import LEADER_LEASE_ID
from cronhive.store.protocols import SchedulerStore

log = logging.getLogger("cronhive.scheduler.leadership")

#: A standby that read the lease's expiry tries again this long after it.
EXPIRY_SLACK = timedelta(milliseconds=5)


class LeadershipLost(Exception):
    """Raised by `Leadership.guard` once this process may no longer act as leader."""


class Change(Enum):
    ELECTED = "elected"
    STEPPED_DOWN = "stepped_down"


def margin_for(lease_s: float) -> timedelta:
    """The safety margin before the lease's expiry at which a leader stops: a tenth of
    the lease, at least 200 ms."""
    return timedelta(seconds=max(0.2, lease_s / 10.0))


class Leadership:
    """The leader lease as seen by one scheduler process."""

    def __init__(self, store: SchedulerStore, holder: str, lease_s: float, *, margin: timedelta | None = None) -> None:
        self.store = store
        self.holder = holder
        self.lease_s = float(lease_s)
        self.interval = timedelta(seconds=renew_interval(self.lease_s))
        self.margin = margin if margin is not None else margin_for(self.lease_s)
        self.lease: Lease | None = None
        self._claim_at: datetime | None = None  # standby: next claim attempt (None: at once)
        self._renew_at: datetime | None = None  # leader: next renewal
        self._beat_at: datetime | None = None  # next heartbeat (None: at once)

    # -- state ------------------------------------------------------------------

    @property
    def term(self) -> int | None:
        """The fencing token of the lease held (whether or not still valid), or None."""
        return self.lease.token if self.lease else None

    def deadline(self) -> datetime | None:
        """The local deadline: lease expiry minus the margin (None when not leader)."""
        return self.lease.expires_at - self.margin if self.lease else None

    def is_leader(self, now: datetime) -> bool:
        """Holding the lease, with ``now`` before the local deadline."""
        deadline = self.deadline()
        return deadline is not None and now < deadline

    def guard(self, now: datetime) -> int:
        """The term, or `LeadershipLost` when ``now`` is past the local deadline (or a
        renewal found the lease lost). Call it right before every write batch and every
        publish. It also renews when a renewal is due, so a long pass keeps the lease
        while each of its steps is short (raises `StoreUnavailable` if that renewal
        cannot reach MongoDB)."""
        if self.is_leader(now) and self._renew_at is not None and now >= self._renew_at:
            self._renew(now)
        if not self.is_leader(now):
            raise LeadershipLost(f"{self.holder} is no longer leader (term {self.term})")
        assert self.lease is not None
        return self.lease.token

    def next_action_at(self) -> datetime | None:
        """When `maintain` has something to do next (None: now)."""
        pending = [self._beat_at, self._renew_at if self.lease else self._claim_at]
        if any(at is None for at in pending):
            return None
        return min(at for at in pending if at is not None)

    # -- actions ----------------------------------------------------------------

    def expire(self, now: datetime) -> Change | None:
        """Step down when ``now`` is past the local deadline (no database access)."""
        if self.lease is not None and not self.is_leader(now):
            return self._step_down(now, "the lease was not renewed before its local deadline")
        return None

    def maintain(self, now: datetime) -> Change | None:
        """Step down, renew or claim as due at ``now``, then heartbeat when due.
        Returns the change of role, if any. Raises `cronhive.errors.StoreUnavailable`
        when MongoDB cannot be reached (the caller backs off and calls again)."""
        change = self.expire(now)
        if self.lease is not None:
            if self._renew_at is None or now >= self._renew_at:
                change = self._renew(now)
        elif self._claim_at is None or now >= self._claim_at:
            change = self._claim(now) or change
        if change is not None:
            self._beat_at = None
        if self._beat_at is None or now >= self._beat_at:
            self._beat(now)
        return change

    def resign(self, now: datetime) -> None:
        """Release the lease (if held) and remove the heartbeat; best effort."""
        lease, self.lease = self.lease, None
        try:
            if lease is not None and self.store.release_lease(lease):
                log.info("released the leader lease", extra={"holder": self.holder, "term": lease.token})
            self.store.remove_scheduler_heartbeat(self.holder)
        except Unavailable as exc:
            log.warning("could not release the leader lease (%s); it expires by itself", exc.message,
                        extra={"holder": self.holder})

    def _claim(self, now: datetime) -> Change | None:
        lease = self.store.claim_lease(LeaseScope.NAMED, LEADER_LEASE_ID, self.holder, self.lease_s, now)
        if lease is None:
            current = self.store.read_lease(LeaseScope.NAMED, LEADER_LEASE_ID)
            retry = now + self.interval
            if current is not None and current.expires_at + EXPIRY_SLACK < retry:
                retry = max(now, current.expires_at + EXPIRY_SLACK)
            self._claim_at = retry
            return None
        self.lease = lease
        self._renew_at = now + self.interval
        log.info("became the leader", extra={"holder": self.holder, "term": lease.token})
        return Change.ELECTED

    def _renew(self, now: datetime) -> Change | None:
        assert self.lease is not None
        renewed = self.store.renew_lease(self.lease, self.lease_s, now)
        if renewed is None:
            return self._step_down(now, "the lease was taken over or expired")
        self.lease = renewed
        self._renew_at = now + self.interval
        return None

    def _step_down(self, now: datetime, why: str) -> Change:
        log.warning("stepping down: %s; publishing stopped", why,
                    extra={"holder": self.holder, "term": self.term})
        self.lease = None
        self._renew_at = None
        self._claim_at = now  # the lease may be free again: try at once
        return Change.STEPPED_DOWN

    def _beat(self, now: datetime) -> None:
        role = SchedulerRole.LEADER if self.is_leader(now) else SchedulerRole.STANDBY
        beat = Heartbeat(self.holder, role, self.term)
        self.store.scheduler_heartbeat(beat, now, now + timedelta(seconds=self.lease_s))
        self._beat_at = now + self.interval
