"""The one lease implementation: claim, renew, release, hand over and read a lease
of any scope — a job's run lease, a run's own lease (``allow``), a named lease of
``leases`` (the scheduler's leader lease, the workers' reaper). The rules are
`cronhive.leases`'; here is how MongoDB carries them out.

`claim` is one atomic conditional update (an update pipeline: the token comes
from the document's ``lease_term``); `claim_as_read` is the same claim for a
caller that has just read the document: an indexed point compare-and-set on the
lease exactly as read, falling back to `claim` when that does not apply, so the
outcome is always `claim`'s. Renew, release and hand-over filter on the lease's
holder and token (`documents.lease_filter`), the one filter of every write under
a lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from cronhive.domain import Job, Run, whole_ms
from cronhive.enums import LeaseScope
from cronhive.leases import Lease, claimable, duration_ms, successor
from cronhive.store.base import Document, StoreBase, translated
from cronhive.store.documents import (
    LEASE_FIELD,
    TERM_FIELD,
    claimable_filter,
    lease_as_read,
    lease_filter,
    lease_from_doc,
    lease_to_doc,
)
from cronhive.store.group_commit import Cas, applied, cas, holds, value_at


def claim(coll: Collection[Document], scope: LeaseScope, doc_id: str, holder: str, ms: int, now: datetime, *,
          mine: tuple[str, ...] = (), run_id: str | None = None, extra_filter: Document | None = None,
          extra_set: Document | None = None, upsert: bool = False) -> Lease | None:
    """Claim the lease of ``coll[doc_id]`` for ``holder`` for ``ms`` milliseconds; None
    when someone else holds it.

    ``mine`` lists other holder names the caller may take over (e.g. the
    reservation a trigger made for this very run). ``extra_filter`` adds conditions
    on the document (e.g. the job is enabled) and ``extra_set`` adds fields written
    in the same atomic update. With ``upsert`` a missing document is created (a
    concurrent creator makes this claim return None).
    """
    same_holder = {"$eq": [f"${LEASE_FIELD}.holder", holder]}
    new_term = {"$add": [{"$ifNull": [f"${TERM_FIELD}", 0]}, 1]}
    # a still-valid lease re-claimed by the same holder keeps its token
    keep = {"$and": [same_holder, {"$gt": [f"${LEASE_FIELD}.expires_at", now]}]}
    term = {"$cond": [keep, {"$ifNull": [f"${TERM_FIELD}", 0]}, new_term]}
    query: Document = {"_id": doc_id, **claimable_filter((holder, *mine), now)}
    if extra_filter:
        query = {"$and": [query, extra_filter]}
    sub = {"holder": holder, "run_id": run_id, "token": f"${TERM_FIELD}", "expires_at": now + timedelta(milliseconds=ms)}
    update = [{"$set": {TERM_FIELD: term}}, {"$set": {LEASE_FIELD: sub, **(extra_set or {})}}]
    try:
        doc = coll.find_one_and_update(query, update, upsert=upsert, return_document=ReturnDocument.AFTER,
                                       projection={LEASE_FIELD: 1})
    except DuplicateKeyError:
        return None
    if doc is None:
        return None
    return lease_from_doc(scope, doc_id, doc[LEASE_FIELD])


def claim_as_read(coll: Collection[Document], scope: LeaseScope, seen: Job | Run, holder: str, ms: int,
                  now: datetime, *, mine: tuple[str, ...] = (), run_id: str | None = None) -> Lease | None:
    """`claim`, for a caller that has just read the document ``seen``: when its lease as
    read is claimable at ``now``, one ``update_one`` by ``_id`` that compares-and-sets
    the lease fields exactly as read — an indexed point write, the fencing token
    computed from what was read (no find-and-modify: the MongoDB-wire server used in
    tests and under ``make up`` scans the whole collection for each one). If the lease
    is not claimable as read, or changed since the read (the write matched nothing),
    the atomic `claim` decides."""
    doc_id = seen.job_id if isinstance(seen, Job) else seen.run_id
    own = (holder, *mine)
    if not claimable(seen.lease, own, now):
        return claim(coll, scope, doc_id, holder, ms, now, mine=mine, run_id=run_id)
    lease = successor(seen.lease, seen.lease_term, scope, doc_id, holder, run_id, now, ms)
    if write_lease(coll, doc_id, lease_as_read(seen.lease, seen.lease_term), lease):
        return lease
    return claim(coll, scope, doc_id, holder, ms, now, mine=mine, run_id=run_id)


def write_lease(coll: Collection[Document], doc_id: str, expected: Document, lease: Lease) -> bool:
    """Write ``lease`` (and its token as the document's ``lease_term``) over what
    ``expected`` says is there, through the process's group commit; whether it applied."""
    update = {"$set": {TERM_FIELD: lease.token, LEASE_FIELD: lease_to_doc(lease)}}
    proof = holds({f"{LEASE_FIELD}.holder": lease.holder, f"{LEASE_FIELD}.token": lease.token})
    return applied(coll, cas(doc_id, expected, update, proof))


def renew(coll: Collection[Document], lease: Lease, ms: int, now: datetime, *,
          expired_too: bool = False) -> Lease | None:
    """Extend a lease still held at ``now``; None when it was lost (expired, taken or
    released). A compare-and-set by ``_id`` through the group commit (the renewals of a
    process's lease keepers share commands; no find-and-modify). With ``expired_too``,
    also a lease that expired while nobody took it (a run's reservation)."""
    renewed = replace(lease, expires_at=whole_ms(now + timedelta(milliseconds=ms)))
    expected = _held(lease) if expired_too else {**_held(lease), f"{LEASE_FIELD}.expires_at": {"$gt": now}}
    update = {"$set": {f"{LEASE_FIELD}.expires_at": renewed.expires_at}}
    proof = holds({f"{LEASE_FIELD}.holder": lease.holder, f"{LEASE_FIELD}.token": lease.token,
                   f"{LEASE_FIELD}.expires_at": renewed.expires_at})
    return renewed if applied(coll, cas(lease.doc_id, expected, update, proof)) else None


def release(coll: Collection[Document], lease: Lease, extra_set: Document | None = None,
            extra_filter: Document | None = None) -> bool:
    """Free a lease; only its holder (same token) can. Returns whether it was ours."""
    query = {**lease_filter(lease), **(extra_filter or {})}
    return coll.update_one(query, {"$set": {LEASE_FIELD: None, **(extra_set or {})}}).modified_count == 1


def release_recording_cas(lease: Lease, recorded: Document, extra_filter: Document | None = None) -> Cas:
    """`release` as a compare-and-set writing ``recorded`` in the same update — values
    no other write makes (a run's outcome on its job), so it goes through the group
    commit, whose proof is that they are there and the lease is no longer this one's."""
    recorded_there = holds(recorded)

    def released(doc: Mapping[str, Any]) -> bool:
        return recorded_there(doc) and value_at(doc, f"{LEASE_FIELD}.holder") != lease.holder

    expected = {**_held(lease), **(extra_filter or {})}
    return cas(lease.doc_id, expected, {"$set": {LEASE_FIELD: None, **recorded}}, released)


def hand_on_recording_cas(lease: Lease, next_lease: Lease, recorded: Document,
                          extra_filter: Document | None = None) -> Cas:
    """Pass ``lease`` on to ``next_lease`` — another holder under the next token (the
    document's ``lease_term`` + 1, as a claim would write it: a fencing token only
    grows) — writing ``recorded`` in the same update, through the group commit: only
    while ``lease`` holds and the term is its token (what a claim of it wrote)."""
    assert next_lease.doc_id == lease.doc_id and next_lease.token == lease.token + 1
    expected = {**_held(lease), TERM_FIELD: lease.token, **(extra_filter or {})}
    written = {LEASE_FIELD: lease_to_doc(next_lease), TERM_FIELD: next_lease.token, **recorded}
    proof = holds({**recorded, f"{LEASE_FIELD}.holder": next_lease.holder, f"{LEASE_FIELD}.token": next_lease.token})
    return cas(lease.doc_id, expected, {"$set": written}, proof)


def _held(lease: Lease) -> Document:
    """`lease_filter` without the ``_id`` (a compare-and-set names its document apart)."""
    return {key: value for key, value in lease_filter(lease).items() if key != "_id"}


def hand_over(coll: Collection[Document], lease: Lease, holder: str, until: datetime) -> bool:
    """Pass a held lease (same token) to ``holder`` until ``until``."""
    update = {"$set": {f"{LEASE_FIELD}.holder": holder, f"{LEASE_FIELD}.expires_at": until}}
    return coll.update_one(lease_filter(lease), update).modified_count == 1


def read_state(coll: Collection[Document], scope: LeaseScope, doc_id: str) -> tuple[Lease | None, int | None]:
    """The lease as stored (possibly expired; None when free) and the stored ``lease_term``."""
    doc = coll.find_one({"_id": doc_id}, projection={LEASE_FIELD: 1, TERM_FIELD: 1}) or {}
    sub = doc.get(LEASE_FIELD)
    return (lease_from_doc(scope, doc_id, sub) if sub else None), doc.get(TERM_FIELD)


def read(coll: Collection[Document], scope: LeaseScope, doc_id: str) -> Lease | None:
    """The lease as stored (possibly expired), or None when free."""
    return read_state(coll, scope, doc_id)[0]


class LeaseStore(StoreBase):
    """Leases of every scope, through the functions above. Durations in seconds."""

    def lease_collection(self, scope: LeaseScope) -> Collection[Document]:
        if scope == LeaseScope.JOB:
            return self.jobs
        if scope == LeaseScope.RUN:
            return self.runs
        return self.leases

    @translated
    def claim_lease(self, scope: LeaseScope, doc_id: str, holder: str, duration_s: float, now: datetime, *,
                    run_id: str | None = None, mine: tuple[str, ...] = (), seen: Job | Run | None = None,
                    takes_buffer: bool = False) -> Lease | None:
        """Claim the lease of ``doc_id`` (free, expired at ``now``, or ``mine``); None while
        another holds it. A named lease's document is created on its first claim.

        ``seen``: the document just read — then `claim_as_read` (an indexed
        compare-and-set instead of a find-and-modify). ``takes_buffer``
        (``buffer_one``): the job's ``buffered_run_id`` is cleared in the same write
        when it is ``run_id`` (the buffered run stops waiting once it has the lease).
        """
        coll = self.lease_collection(scope)
        ms = duration_ms(duration_s)
        if takes_buffer:
            extra = {"buffered_run_id": {"$cond": [{"$eq": ["$buffered_run_id", run_id]}, None, "$buffered_run_id"]}}
            return claim(coll, scope, doc_id, holder, ms, now, mine=mine, run_id=run_id, extra_set=extra)
        if seen is not None:
            return claim_as_read(coll, scope, seen, holder, ms, now, mine=mine, run_id=run_id)
        return claim(coll, scope, doc_id, holder, ms, now, mine=mine, run_id=run_id,
                     upsert=scope == LeaseScope.NAMED)

    @translated
    def renew_lease(self, lease: Lease, duration_s: float, now: datetime) -> Lease | None:
        """Extend ``lease`` at ``now``; None when it was lost."""
        return renew(self.lease_collection(lease.scope), lease, duration_ms(duration_s), now)

    @translated
    def hold_reservation(self, reservation: Lease, duration_s: float, now: datetime) -> Lease | None:
        """The run's reservation (holder ``run:<run_id>``, its token) held for
        ``duration_s`` from ``now`` for the run's first attempt — also when it expired
        meanwhile, as long as nobody took it (nothing else writes that holder and
        token). None when it is no longer there (taken, released, or re-made)."""
        return renew(self.lease_collection(reservation.scope), reservation, duration_ms(duration_s), now,
                     expired_too=True)

    @translated
    def release_lease(self, lease: Lease) -> bool:
        """Free ``lease``; False when it was no longer ours."""
        return release(self.lease_collection(lease.scope), lease)

    @translated
    def hand_over_lease(self, lease: Lease, holder: str, until: datetime) -> bool:
        """Pass a held lease (same token) to ``holder`` until ``until``, e.g. back to the
        run's reservation while its retry waits out the backoff."""
        return hand_over(self.lease_collection(lease.scope), lease, holder, until)

    @translated
    def read_lease(self, scope: LeaseScope, doc_id: str) -> Lease | None:
        """The lease as stored (possibly expired), or None."""
        return read(self.lease_collection(scope), scope, doc_id)
