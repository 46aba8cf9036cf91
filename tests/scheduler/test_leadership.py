"""scheduler/leadership.py against the real store, with instants moved by hand (no sleeping):
claim, renew, expiry takeover, monotonic fencing terms, stale leaders' writes rejected."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from cronhive.domain import new_run, utcnow
from cronhive.enums import LeaseScope, Trigger
from cronhive.scheduler.leadership import Change, Leadership, LeadershipLost, margin_for
from cronhive.slots import JobAdvance
from cronhive.store import LEADER_LEASE_ID, MongoStore
from cronhive.store.documents import lease_from_doc, run_to_doc

LEASE_S = 9.0  # renew every 3 s, margin 0.9 s
INTERVAL = timedelta(seconds=3)
MS = timedelta(milliseconds=1)


@pytest.fixture
def t0() -> datetime:
    return utcnow()


def pair(store: MongoStore) -> tuple[Leadership, Leadership]:
    return Leadership(store, "host-a:1", LEASE_S), Leadership(store, "host-b:2", LEASE_S)


def stored_lease(store: MongoStore):  # type: ignore[no-untyped-def]
    doc = store.leases.find_one({"_id": LEADER_LEASE_ID})
    return lease_from_doc(LeaseScope.NAMED, LEADER_LEASE_ID, doc["lease"]) if doc and doc.get("lease") else None


def test_the_first_claimant_leads_and_the_other_stands_by(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    assert a.maintain(t0) is Change.ELECTED
    assert b.maintain(t0 + MS) is None
    assert a.is_leader(t0) and not b.is_leader(t0)
    assert a.term == 1 and b.term is None
    assert stored_lease(store).expires_at == t0 + timedelta(seconds=LEASE_S)
    status = store.scheduler_status(t0 + MS).view()
    assert status["holder"] == "host-a:1" and status["pid"] == 1 and status["term"] == 1
    assert status["standbys"] == ["host-b:2"]
    beat = store.db["schedulers"].find_one({"_id": "host-b:2"})
    assert beat["role"] == "standby" and beat["expires_at"] == t0 + MS + timedelta(seconds=LEASE_S)


def test_the_leader_renews_every_third_of_the_lease_keeping_its_term(store: MongoStore, t0: datetime) -> None:
    a, _ = pair(store)
    a.maintain(t0)
    assert a.next_action_at() == t0 + INTERVAL
    assert a.maintain(t0 + INTERVAL - MS) is None
    assert stored_lease(store).expires_at == t0 + timedelta(seconds=LEASE_S)  # not yet renewed
    a.maintain(t0 + INTERVAL)
    lease = stored_lease(store)
    assert lease.expires_at == t0 + INTERVAL + timedelta(seconds=LEASE_S) and lease.token == 1
    assert a.lease == lease and a.next_action_at() == t0 + 2 * INTERVAL


def test_a_standby_retries_at_the_lease_expiry_when_that_comes_first(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    a.maintain(t0)
    late = t0 + timedelta(seconds=7)  # the lease (t0 + 9 s) expires before late + 3 s
    b.maintain(late)
    assert b.next_action_at() == t0 + timedelta(seconds=LEASE_S, milliseconds=5)


def test_a_dead_leader_is_replaced_after_expiry_with_a_higher_term(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    a.maintain(t0)
    b.maintain(t0)
    expiry = t0 + timedelta(seconds=LEASE_S)
    assert b.maintain(expiry - MS) is None  # still held at the database
    assert b.next_action_at() == expiry + timedelta(milliseconds=5)  # it comes back right at expiry
    assert b.maintain(expiry + timedelta(milliseconds=5)) is Change.ELECTED
    assert b.term == 2 and stored_lease(store).holder == "host-b:2"
    # the takeover came within lease + one renew interval of a's last renewal
    assert expiry - t0 <= timedelta(seconds=LEASE_S) + INTERVAL


def test_a_leader_stops_at_its_local_deadline_before_anyone_can_claim(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    a.maintain(t0)
    deadline = t0 + timedelta(seconds=LEASE_S) - margin_for(LEASE_S)
    assert a.deadline() == deadline
    assert a.is_leader(deadline - MS) and not a.is_leader(deadline)
    with pytest.raises(LeadershipLost):
        a.guard(deadline)  # past the deadline it does not even try to renew
    assert stored_lease(store).expires_at == t0 + timedelta(seconds=LEASE_S)
    assert b.maintain(deadline) is None  # the database still says a: nobody acts in between
    assert a.expire(deadline) is Change.STEPPED_DOWN and a.lease is None


def test_the_guard_renews_when_a_renewal_is_due_so_long_passes_keep_the_lease(
        store: MongoStore, t0: datetime) -> None:
    a, _ = pair(store)
    a.maintain(t0)
    assert a.guard(t0 + INTERVAL - MS) == 1
    assert stored_lease(store).expires_at == t0 + timedelta(seconds=LEASE_S)  # not due yet: no write
    assert a.guard(t0 + INTERVAL) == 1
    assert stored_lease(store).expires_at == t0 + INTERVAL + timedelta(seconds=LEASE_S)
    assert a.guard(t0 + 2 * INTERVAL - MS) == 1  # the next renewal is one interval later
    assert stored_lease(store).expires_at == t0 + INTERVAL + timedelta(seconds=LEASE_S)


def test_a_paused_leader_finds_itself_replaced_and_stands_by(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    a.maintain(t0)
    b.maintain(t0 + timedelta(seconds=LEASE_S))
    resumed = t0 + timedelta(seconds=LEASE_S + 2)
    assert a.maintain(resumed) is Change.STEPPED_DOWN
    assert a.lease is None and not a.is_leader(resumed)
    assert stored_lease(store).holder == "host-b:2"
    assert store.scheduler_status(resumed).view()["standbys"] == ["host-a:1"]


def test_a_renewal_that_finds_the_lease_taken_steps_down(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    a.maintain(t0)
    b.maintain(t0 + timedelta(seconds=LEASE_S))  # a missed its renewals (e.g. MongoDB unreachable to it)
    a.margin = timedelta(0)
    a._renew_at = t0  # force the renewal path at an instant a still believes valid
    assert a.maintain(t0 + timedelta(seconds=LEASE_S) - MS) is Change.STEPPED_DOWN
    assert a.lease is None


def test_terms_only_grow_across_takeovers(store: MongoStore, t0: datetime) -> None:
    terms = []
    now = t0
    for turn in range(6):
        leader = Leadership(store, f"host-{turn % 2}:{turn}", LEASE_S)  # each one dies, never renewing
        assert leader.maintain(now) is Change.ELECTED
        terms.append(leader.term)
        now += timedelta(seconds=LEASE_S)
    assert terms == sorted(terms) and len(set(terms)) == 6


def test_resigning_releases_the_lease_for_an_immediate_takeover(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    a.maintain(t0)
    b.maintain(t0)
    a.resign(t0 + MS)
    assert stored_lease(store) is None
    assert store.db["schedulers"].find_one({"_id": "host-a:1"}) is None
    b._claim_at = None  # its next attempt (within one renew interval) succeeds
    assert b.maintain(t0 + 2 * MS) is Change.ELECTED and b.term == 2


def test_a_silent_standby_drops_out_of_the_status(store: MongoStore, t0: datetime) -> None:
    a, b = pair(store)
    a.maintain(t0)
    b.maintain(t0)
    assert store.scheduler_status(t0 + timedelta(seconds=LEASE_S) - MS).view()["standbys"] == ["host-b:2"]
    assert store.scheduler_status(t0 + timedelta(seconds=LEASE_S)).view()["standbys"] == []


def test_writes_of_a_stale_term_are_rejected(store: MongoStore, t0: datetime) -> None:
    """Fencing: once the new leader wrote a job or run, the old term changes nothing."""
    job = store.create_job({"name": "fenced", "job_id": "fenced", "schedule": "* * * * * *", "handler": "noop"}, t0)
    a, b = pair(store)
    a.maintain(t0)
    old = a.term
    b.maintain(t0 + timedelta(seconds=LEASE_S))
    new = b.term
    assert new > old
    slot = job.next_fire_at
    assert slot is not None

    def advance_to(seconds: int) -> JobAdvance:
        nxt = slot + timedelta(seconds=seconds)
        return JobAdvance(job, nxt, nxt, True)  # expects revision 1 and next_fire_at slot, as read

    assert store.advance_jobs([advance_to(1)], new, "b.1", t0) == {"fenced"}
    store.jobs.update_one({"_id": "fenced"}, {"$set": {"next_fire_at": slot}})  # even with the CAS satisfied,
    assert store.advance_jobs([advance_to(5)], old, "a.1", t0) == set()  # the term fence holds
    assert store.jobs.find_one({"_id": "fenced"})["sched_term"] == new
    assert not store.disable_job("fenced", 1, "stale", t0, old)
    assert a.lease is not None
    assert store.renew_lease(a.lease, LEASE_S, t0 + timedelta(seconds=LEASE_S + 1)) is None
    assert not store.release_lease(a.lease)

    run = replace(new_run(job, "run_fenced", Trigger.SCHEDULE, slot, t0, None), sched_term=new)
    store.runs.insert_one(run_to_doc(run))
    assert store.mark_runs_queued(["run_fenced"], t0, old) == 0
    assert not store.adopt_scheduled_run(replace(run, sched_term=old), old)
    assert store.delete_scheduled_drafts(["run_fenced"], old) == 0
    assert store.runs.find_one({"_id": "run_fenced"})["status"] == "pending"
    assert store.mark_runs_queued(["run_fenced"], t0, new) == 1
