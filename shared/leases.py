"""MongoDB leases: scheduler leadership and job run locks.

A lease is a sub-document ``{holder, token, run_id, expires_at}`` stored under a
field (``lease``) of some document, next to a monotonic counter ``lease_term``.

Rules (SPEC §5):

* **Claim** is one atomic conditional update: it succeeds only when the lease is
  free, expired, or already held by one of the holders the caller names as its
  own (``mine``). A claim by a new holder increments ``lease_term`` and the new
  lease carries it as its fencing ``token``; a re-claim by the same holder keeps
  the token.
* **Expiry is decided on one clock: the database's.** Every function takes
  the instant ``now`` explicitly; processes pass `cronhive.clock.DatabaseClock`
  readings (the local clock corrected by the offset to MongoDB's clock, measured
  at start and every few minutes), so hosts with skewed clocks agree on expiry.
  (Server-side ``$$NOW`` would be simpler but is not compared correctly by the
  MongoDB-wire server used in tests.) Tests move a fake clock instead of sleeping.
* **Renew and release** are conditioned on holder *and* token: an ex-holder that
  was paused past expiry (and whose lease was taken over) changes nothing.
* Every other write made under a lease must filter on the same holder and token
  (see `lease_filter`), so a stale holder's writes match no document.
* Renew at a third of the duration (`renew_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

LEASE_FIELD = "lease"
TERM_FIELD = "lease_term"


@dataclass(frozen=True)
class Lease:
    """A held lease: who holds it, its fencing token, and when it expires (DB clock)."""

    doc_id: str
    holder: str
    token: int
    expires_at: datetime
    run_id: str | None = None


def renew_interval(duration_s: float) -> float:
    """How often a holder renews: a third of the lease duration."""
    return duration_s / 3.0


def claimable(own: tuple[str, ...], now: datetime) -> dict[str, Any]:
    """The query that matches a lease that is free, expired at ``now``, or held by ``own``."""
    return {
        "$or": [
            {LEASE_FIELD: None},
            {f"{LEASE_FIELD}.expires_at": {"$lte": now}},
            {f"{LEASE_FIELD}.holder": {"$in": list(own)}},
        ]
    }


def claim(
    coll: Collection,
    doc_id: str,
    holder: str,
    duration_ms: int,
    now: datetime,
    *,
    mine: tuple[str, ...] = (),
    run_id: str | None = None,
    extra_filter: dict[str, Any] | None = None,
    extra_set: dict[str, Any] | None = None,
    upsert: bool = False,
) -> Lease | None:
    """Claim the lease of ``coll[doc_id]`` for ``holder``; None when someone else holds it.

    ``now`` is the database clock's instant (see the module docstring).
    ``mine`` lists other holder names the caller may take over (e.g. the
    reservation a trigger made for this very run). ``extra_filter`` adds
    conditions on the document (e.g. the job is enabled) and ``extra_set`` adds
    fields written in the same atomic update. With ``upsert`` a missing document
    is created (a concurrent creator makes this claim return None).
    """
    own = (holder, *mine)
    same_holder = {"$eq": [f"${LEASE_FIELD}.holder", holder]}
    new_term = {"$add": [{"$ifNull": [f"${TERM_FIELD}", 0]}, 1]}
    # a still-valid lease re-claimed by the same holder keeps its token
    keep = {"$and": [same_holder, {"$gt": [f"${LEASE_FIELD}.expires_at", now]}]}
    term = {"$cond": [keep, {"$ifNull": [f"${TERM_FIELD}", 0]}, new_term]}
    query: dict[str, Any] = {"_id": doc_id, **claimable(own, now)}
    if extra_filter:
        query = {"$and": [query, extra_filter]}
    update = [
        {"$set": {TERM_FIELD: term}},
        {
            "$set": {
                LEASE_FIELD: {
                    "holder": holder,
                    "run_id": run_id,
                    "token": f"${TERM_FIELD}",
                    "expires_at": now + timedelta(milliseconds=duration_ms),
                },
                **(extra_set or {}),
            }
        },
    ]
    try:
        doc = coll.find_one_and_update(
            query,
            update,
            upsert=upsert,
            return_document=ReturnDocument.AFTER,
            projection={LEASE_FIELD: 1},
        )
    except DuplicateKeyError:
        return None
    if doc is None:
        return None
    return lease_from_doc(doc_id, doc[LEASE_FIELD])


def claim_as_read(
    coll: Collection,
    doc: dict[str, Any],
    holder: str,
    duration_ms: int,
    now: datetime,
    *,
    mine: tuple[str, ...] = (),
    run_id: str | None = None,
) -> Lease | None:
    """`claim`, for a caller that has just read the document ``doc``: when the lease as
    read is claimable at ``now`` (free, expired, or ``own``), one ``update_one`` by
    ``_id`` that compares-and-sets the lease fields exactly as read — an indexed point
    write, the fencing token computed from what was read (no find-and-modify: the
    MongoDB-wire server used in tests and under ``make up`` scans the whole collection
    for each one). If the lease is not claimable as read, or changed since the read
    (the write matched nothing), the atomic `claim` decides, so the outcome is always
    the one `claim` would give.
    """
    own = (holder, *mine)
    current = doc.get(LEASE_FIELD) or None
    live = bool(current) and current.get("expires_at") is not None and current["expires_at"] > now
    if live and current.get("holder") not in own:
        return claim(coll, doc["_id"], holder, duration_ms, now, mine=mine, run_id=run_id)
    term = int(doc.get(TERM_FIELD) or 0)
    token = term if live and current.get("holder") == holder else term + 1
    lease = {"holder": holder, "run_id": run_id, "token": token,
             "expires_at": now + timedelta(milliseconds=duration_ms)}
    expect: dict[str, Any] = {"_id": doc["_id"], TERM_FIELD: doc.get(TERM_FIELD)}
    if current is None:
        expect[LEASE_FIELD] = None
    else:
        expect.update({f"{LEASE_FIELD}.holder": current.get("holder"), f"{LEASE_FIELD}.token": current.get("token"),
                       f"{LEASE_FIELD}.expires_at": current.get("expires_at")})
    if coll.update_one(expect, {"$set": {TERM_FIELD: token, LEASE_FIELD: lease}}).modified_count == 1:
        return lease_from_doc(doc["_id"], lease)
    return claim(coll, doc["_id"], holder, duration_ms, now, mine=mine, run_id=run_id)


def lease_from_doc(doc_id: str, sub: dict[str, Any]) -> Lease:
    return Lease(
        doc_id=doc_id,
        holder=sub["holder"],
        token=int(sub["token"]),
        expires_at=sub["expires_at"],
        run_id=sub.get("run_id"),
    )


def lease_filter(lease: Lease) -> dict[str, Any]:
    """The filter every write made under ``lease`` must carry (fencing)."""
    return {"_id": lease.doc_id, f"{LEASE_FIELD}.holder": lease.holder, f"{LEASE_FIELD}.token": lease.token}


def renew(coll: Collection, lease: Lease, duration_ms: int, now: datetime) -> Lease | None:
    """Extend a lease we still hold at ``now``; None when it was lost (expired, taken or released)."""
    doc = coll.find_one_and_update(
        {**lease_filter(lease), f"{LEASE_FIELD}.expires_at": {"$gt": now}},
        {"$set": {f"{LEASE_FIELD}.expires_at": now + timedelta(milliseconds=duration_ms)}},
        return_document=ReturnDocument.AFTER,
        projection={LEASE_FIELD: 1},
    )
    if doc is None:
        return None
    return lease_from_doc(lease.doc_id, doc[LEASE_FIELD])


def release(coll: Collection, lease: Lease, extra_set: dict[str, Any] | None = None) -> bool:
    """Free a lease; only its holder (same token) can. Returns whether it was ours."""
    result = coll.update_one(lease_filter(lease), {"$set": {LEASE_FIELD: None, **(extra_set or {})}})
    return result.modified_count == 1


def read(coll: Collection, doc_id: str) -> Lease | None:
    """The lease as stored (possibly expired), or None when free."""
    doc = coll.find_one({"_id": doc_id}, projection={LEASE_FIELD: 1})
    if not doc or not doc.get(LEASE_FIELD):
        return None
    return lease_from_doc(doc_id, doc[LEASE_FIELD])
