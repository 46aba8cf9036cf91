"""Leases: the rules every lease follows, and the names of their holders. Pure.

A lease is a sub-document ``{holder, run_id, token, expires_at}`` stored under
``lease`` of some document, next to a monotonic counter ``lease_term``. It lives
on a job (the run lease of ``forbid``/``buffer_one`` jobs), on a run (``allow``
runs), or on a named document of ``leases`` (the scheduler's leader lease, the
workers' reaper): its `LeaseScope`. One implementation claims, renews, releases
and hands over all of them (`cronhive.store.leases.LeaseStore`); the rules
(SPEC §5):

* **Claim** is one atomic conditional update: it succeeds only when the lease is
  free, expired, or already held by one of the holders the caller names as its
  own (``mine``). A claim by a new holder increments ``lease_term`` and the new
  lease carries it as its fencing ``token``; a re-claim of a live lease by the same
  holder keeps the token (`successor`).
* **Expiry is decided on one clock: the database's.** Every function takes the
  instant ``now`` explicitly; processes pass `cronhive.clock.DatabaseClock`
  readings, so hosts with skewed clocks agree on expiry. (Server-side ``$$NOW``
  would be simpler but is not compared correctly by the MongoDB-wire server used
  in tests.) Tests move a fake clock instead of sleeping.
* **Renew and release** are conditioned on holder *and* token: an ex-holder that
  was paused past expiry (and whose lease was taken over) changes nothing.
* Every other write made under a lease filters on the same holder and token (one
  filter, `cronhive.store.documents.lease_filter`), so a stale holder's writes
  match no document.
* Renew at a third of the duration (`renew_interval`).

Holder names, all made here: a process is ``hostname:pid`` (`process_holder`:
a scheduler, a worker process); a run reserved by a trigger or the scheduler is
``run:<run_id>`` (`reservation_holder`), and a run's first attempt starts under
that reservation as it stands, holding it (`outlasts_renewal`: the run document
decides which delivery starts); any other attempt is
``hostname:pid:<run_id>:<attempt>:<nonce>`` (`attempt_holder`).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronhive.enums import LeaseScope


@dataclass(frozen=True)
class Lease:
    """A lease as held or as read: where it lives (``scope``, ``doc_id``), who holds
    it, its fencing token, and when it expires (database clock)."""

    scope: LeaseScope
    doc_id: str
    holder: str
    token: int
    expires_at: datetime
    run_id: str | None = None

    def live(self, now: datetime) -> bool:
        """Not yet expired at ``now``."""
        return self.expires_at > now

    def claimable_by(self, own: Collection[str], now: datetime) -> bool:
        """Free for a claimant whose own holder names are ``own``: expired, or held by one of them."""
        return not self.live(now) or self.holder in own


def claimable(lease: Lease | None, own: Collection[str], now: datetime) -> bool:
    """Free, expired at ``now``, or held by one of ``own``."""
    return lease is None or lease.claimable_by(own, now)


def successor(current: Lease | None, term: int | None, scope: LeaseScope, doc_id: str, holder: str,
              run_id: str | None, now: datetime, duration_ms: int) -> Lease:
    """The lease a claim by ``holder`` at ``now`` writes over ``current`` (as read, with
    the document's ``lease_term`` ``term``; the caller has checked it is `claimable`):
    the same token when ``holder`` re-claims its own live lease, else the next term."""
    base = int(term or 0)
    keeps = current is not None and current.holder == holder and current.live(now)
    token = base if keeps else base + 1
    return Lease(scope, doc_id, holder, token, now + timedelta(milliseconds=duration_ms), run_id)


def renew_interval(duration_s: float) -> float:
    """How often a holder renews: a third of the lease duration."""
    return duration_s / 3.0


def outlasts_renewal(lease: Lease, now: datetime, duration_s: float) -> bool:
    """Whether an attempt may start under ``lease`` (its run's reservation) as it stands,
    without writing it: at least half a lease (``duration_s``) is left, so the holder's
    next renewal pass (within `renew_interval`, a third) still finds a sixth left.
    Otherwise the reservation is renewed first."""
    return lease.expires_at - now >= timedelta(seconds=duration_s / 2)


def duration_ms(duration_s: float) -> int:
    return int(duration_s * 1000)


# -- holder names --------------------------------------------------------------------


def process_holder() -> str:
    """This process's holder name: ``hostname:pid`` (a scheduler, a worker process)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def reservation_holder(run_id: str) -> str:
    """The lease holder name a trigger or the scheduler reserves for a run: ``run:<run_id>``."""
    return f"run:{run_id}"


def attempt_holder(worker: str, run_id: str, attempt: int) -> str:
    """The lease holder of one delivery's attempt: ``<worker>:<run_id>:<attempt>:<nonce>``.

    The nonce makes two deliveries of the same run in one process distinct
    holders, so each claim by a new delivery gets a new fencing token."""
    return f"{worker}:{run_id}:{attempt}:{secrets.token_hex(3)}"


def host_and_pid(holder: str) -> tuple[str, int | None]:
    """``hostname:pid`` → ``(hostname, pid)``; the pid is None when the name has none."""
    host, _, pid = holder.rpartition(":")
    return host, int(pid) if pid.isdigit() else None


def pid_of(holder: str | None) -> int | None:
    """The pid in a ``hostname:pid`` holder name, or None."""
    if not holder:
        return None
    try:
        return int(holder.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


__all__ = [
    "Lease",
    "attempt_holder",
    "claimable",
    "duration_ms",
    "host_and_pid",
    "outlasts_renewal",
    "pid_of",
    "process_holder",
    "renew_interval",
    "reservation_holder",
    "successor",
]
