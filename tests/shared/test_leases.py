"""cronhive.leases on the real store: claim free/expired/mine, fencing tokens,
renew/release only by holder + token. Expiry is tested by passing later ``now``
values, never by sleeping; the race uses real OS processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

from cronhive import leases
from cronhive.leases import Lease, lease_filter
from cronhive.store import MongoStore

T0 = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)
DURATION_MS = 10_000


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def coll(store: MongoStore) -> Collection:
    store.jobs.insert_one({"_id": "job", "enabled": True, "lease": None, "lease_term": 0, "runs": 0})
    return store.jobs


def claim(coll: Collection, holder: str, now: datetime, **kwargs: Any) -> Lease | None:
    return leases.claim(coll, "job", holder, DURATION_MS, now, **kwargs)


def test_claim_a_free_lease(coll: Collection) -> None:
    lease = claim(coll, "a", T0, run_id="run_1")
    assert lease == Lease(doc_id="job", holder="a", token=1, expires_at=at(10), run_id="run_1")
    assert leases.read(coll, "job") == lease
    doc = coll.find_one({"_id": "job"})
    assert doc["lease_term"] == 1 and doc["lease"]["token"] == 1


def test_a_held_lease_cannot_be_claimed(coll: Collection) -> None:
    mine = claim(coll, "a", T0)
    assert claim(coll, "b", at(9.999)) is None
    assert leases.read(coll, "job") == mine


def test_an_expired_lease_is_claimed_with_a_new_token(coll: Collection) -> None:
    first = claim(coll, "a", T0)
    second = claim(coll, "b", at(10))  # expires_at <= now: expired
    assert second is not None and second.holder == "b"
    assert second.token == first.token + 1 == 2
    assert second.expires_at == at(20)


def test_reclaiming_my_live_lease_keeps_the_token_and_extends_it(coll: Collection) -> None:
    first = claim(coll, "a", T0)
    again = claim(coll, "a", at(5))
    assert again is not None and again.token == first.token and again.expires_at == at(15)


def test_reclaiming_my_expired_lease_gets_a_new_token(coll: Collection) -> None:
    first = claim(coll, "a", T0)
    again = claim(coll, "a", at(11))
    assert again is not None and again.token == first.token + 1


def test_a_reservation_named_in_mine_is_taken_over_with_a_new_token(coll: Collection) -> None:
    reserved = claim(coll, "run:run_1", T0, run_id="run_1")
    assert claim(coll, "worker-2", at(1), run_id="run_1") is None  # not named as mine
    taken = claim(coll, "worker-1", at(1), run_id="run_1", mine=("run:run_1",))
    assert taken is not None and taken.holder == "worker-1" and taken.run_id == "run_1"
    assert taken.token == reserved.token + 1


def test_fencing_tokens_only_grow(coll: Collection) -> None:
    tokens = []
    now = T0
    for holder in ["a", "b", "a", "c", "c", "b"]:
        lease = claim(coll, holder, now)
        assert lease is not None
        tokens.append(lease.token)
        now += timedelta(milliseconds=DURATION_MS)  # let it expire before the next claim
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert coll.find_one({"_id": "job"})["lease_term"] == tokens[-1]


def test_a_release_frees_the_lease_but_the_term_keeps_counting(coll: Collection) -> None:
    first = claim(coll, "a", T0)
    assert leases.release(coll, first) is True
    assert leases.read(coll, "job") is None
    second = claim(coll, "b", at(1))
    assert second is not None and second.token == first.token + 1


def test_renew_extends_only_a_lease_still_held(coll: Collection) -> None:
    lease = claim(coll, "a", T0)
    renewed = leases.renew(coll, lease, DURATION_MS, at(3))
    assert renewed == Lease("job", "a", lease.token, at(13), None)
    assert leases.renew(coll, renewed, DURATION_MS, at(13)) is None  # expired at 13: lost, not renewed
    assert leases.read(coll, "job").expires_at == at(13)


def test_a_stale_holder_changes_nothing(coll: Collection) -> None:
    stale = claim(coll, "a", T0)
    current = claim(coll, "b", at(12))  # a was paused past expiry; b took over
    assert leases.renew(coll, stale, DURATION_MS, at(12.5)) is None
    assert leases.release(coll, stale) is False
    result = coll.update_one(lease_filter(stale), {"$inc": {"runs": 1}})
    assert result.matched_count == 0
    assert leases.read(coll, "job") == current
    assert coll.find_one({"_id": "job"})["runs"] == 0
    # the current holder's writes do match
    assert coll.update_one(lease_filter(current), {"$inc": {"runs": 1}}).modified_count == 1


def test_same_holder_name_with_an_old_token_is_stale_too(coll: Collection) -> None:
    old = claim(coll, "a", T0)
    new = claim(coll, "a", at(11))  # same name, expired in between: a new term
    assert new.token != old.token
    assert leases.release(coll, old) is False
    assert leases.renew(coll, old, DURATION_MS, at(12)) is None
    assert leases.release(coll, new) is True


def test_release_only_by_the_holder(coll: Collection) -> None:
    lease = claim(coll, "a", T0)
    impostor = Lease("job", "b", lease.token, lease.expires_at)
    assert leases.release(coll, impostor) is False
    assert leases.release(coll, lease, extra_set={"last_run_status": "succeeded"}) is True
    doc = coll.find_one({"_id": "job"})
    assert doc["lease"] is None and doc["last_run_status"] == "succeeded"
    assert leases.release(coll, lease) is False  # twice: nothing left to release


def test_extra_filter_and_extra_set_apply_in_the_same_update(coll: Collection) -> None:
    assert claim(coll, "a", T0, extra_filter={"enabled": False}) is None
    assert leases.read(coll, "job") is None
    lease = claim(coll, "a", T0, extra_filter={"enabled": True}, extra_set={"buffered_run_id": None, "runs": 7})
    assert lease is not None and coll.find_one({"_id": "job"})["runs"] == 7


def test_claim_of_a_missing_document(store: MongoStore) -> None:
    assert leases.claim(store.leases, "nothing", "a", DURATION_MS, T0) is None
    assert store.leases.count_documents({}) == 0
    created = leases.claim(store.leases, "leader", "a", DURATION_MS, T0, upsert=True)
    assert created is not None and created.token == 1
    assert leases.claim(store.leases, "leader", "b", DURATION_MS, at(1), upsert=True) is None  # held: no second doc
    assert store.leases.count_documents({}) == 1
    assert leases.claim(store.leases, "leader", "b", DURATION_MS, at(10), upsert=True).token == 2


def test_renew_interval_is_a_third() -> None:
    assert leases.renew_interval(30) == 10
    assert leases.renew_interval(3) == 1


# -- 8 OS processes race for one lease --------------------------------------------

RACERS = 8
ROUNDS = 5


def race_for_lease(uri: str, db: str, holder: str, now: datetime, barrier: Any, results: Any) -> None:
    """One racer (a spawned process): each round, claim a job's lease, then a leader lease (upsert)."""
    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        client.admin.command("ping")  # connected before the start line
        for round_ in range(ROUNDS):
            barrier.wait(timeout=60)
            job = leases.claim(client[db]["jobs"], f"job-{round_}", holder, DURATION_MS, now)
            barrier.wait(timeout=60)
            leader = leases.claim(client[db]["leases"], f"leader-{round_}", holder, DURATION_MS, now, upsert=True)
            results.put((round_, holder, job, leader))
    finally:
        client.close()


def test_eight_processes_racing_for_one_lease_one_wins(store: MongoStore, mongodb_uri: str) -> None:
    store.jobs.insert_many([{"_id": f"job-{round_}", "lease": None, "lease_term": 0} for round_ in range(ROUNDS)])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS)
    results = ctx.Queue()
    racers = [
        ctx.Process(target=race_for_lease, args=(mongodb_uri, store.db.name, f"racer-{i}", T0, barrier, results))
        for i in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=120) for _ in range(RACERS * ROUNDS)]
    for racer in racers:
        racer.join(30)
        assert racer.exitcode == 0

    for round_ in range(ROUNDS):
        this_round = [outcome for outcome in outcomes if outcome[0] == round_]
        job_winners = [lease for _, _, lease, _ in this_round if lease is not None]
        leader_winners = [lease for _, _, _, lease in this_round if lease is not None]
        assert len(job_winners) == 1, (round_, job_winners)
        assert len(leader_winners) == 1, (round_, leader_winners)
        assert leases.read(store.jobs, f"job-{round_}") == job_winners[0] and job_winners[0].token == 1
        assert leases.read(store.leases, f"leader-{round_}") == leader_winners[0] and leader_winners[0].token == 1
    assert store.leases.count_documents({}) == ROUNDS
