"""The lease implementation (cronhive.store.leases) on the real store: claim
free/expired/mine, fencing tokens, renew/release only by holder + token; and the
pure rules and holder names of cronhive.leases. Expiry is tested by passing later
``now`` values, never by sleeping; the race uses real OS processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

from cronhive import leases as rules
from cronhive.enums import LeaseScope
from cronhive.leases import Lease
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.store import leases as store_leases
from cronhive.store.documents import lease_filter
from cronhive.store.group_commit import applied
from tests.services import CommandCounter

T0 = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)
JOB, NAMED = LeaseScope.JOB, LeaseScope.NAMED
DURATION_MS = 10_000


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def coll(store: MongoStore) -> Collection:
    store.jobs.insert_one({"_id": "job", "enabled": True, "lease": None, "lease_term": 0, "runs": 0})
    return store.jobs


def claim(coll: Collection, holder: str, now: datetime, **kwargs: Any) -> Lease | None:
    return store_leases.claim(coll, JOB, "job", holder, DURATION_MS, now, **kwargs)


def test_claim_a_free_lease(coll: Collection) -> None:
    lease = claim(coll, "a", T0, run_id="run_1")
    assert lease == Lease(scope=JOB, doc_id="job", holder="a", token=1, expires_at=at(10), run_id="run_1")
    assert store_leases.read(coll, JOB, "job") == lease
    doc = coll.find_one({"_id": "job"})
    assert doc["lease_term"] == 1 and doc["lease"]["token"] == 1


def test_a_held_lease_cannot_be_claimed(coll: Collection) -> None:
    mine = claim(coll, "a", T0)
    assert claim(coll, "b", at(9.999)) is None
    assert store_leases.read(coll, JOB, "job") == mine


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
    assert store_leases.release(coll, first) is True
    assert store_leases.read(coll, JOB, "job") is None
    second = claim(coll, "b", at(1))
    assert second is not None and second.token == first.token + 1


def test_renew_extends_only_a_lease_still_held(coll: Collection) -> None:
    lease = claim(coll, "a", T0)
    renewed = store_leases.renew(coll, lease, DURATION_MS, at(3))
    assert renewed == Lease(JOB, "job", "a", lease.token, at(13), None)
    assert store_leases.renew(coll, renewed, DURATION_MS, at(13)) is None  # expired at 13: lost, not renewed
    assert store_leases.read(coll, JOB, "job").expires_at == at(13)


def test_a_stale_holder_changes_nothing(coll: Collection) -> None:
    stale = claim(coll, "a", T0)
    current = claim(coll, "b", at(12))  # a was paused past expiry; b took over
    assert store_leases.renew(coll, stale, DURATION_MS, at(12.5)) is None
    assert store_leases.release(coll, stale) is False
    result = coll.update_one(lease_filter(stale), {"$inc": {"runs": 1}})
    assert result.matched_count == 0
    assert store_leases.read(coll, JOB, "job") == current
    assert coll.find_one({"_id": "job"})["runs"] == 0
    # the current holder's writes do match
    assert coll.update_one(lease_filter(current), {"$inc": {"runs": 1}}).modified_count == 1


def test_same_holder_name_with_an_old_token_is_stale_too(coll: Collection) -> None:
    old = claim(coll, "a", T0)
    new = claim(coll, "a", at(11))  # same name, expired in between: a new term
    assert new.token != old.token
    assert store_leases.release(coll, old) is False
    assert store_leases.renew(coll, old, DURATION_MS, at(12)) is None
    assert store_leases.release(coll, new) is True


def test_release_only_by_the_holder(coll: Collection) -> None:
    lease = claim(coll, "a", T0)
    impostor = Lease(JOB, "job", "b", lease.token, lease.expires_at)
    assert store_leases.release(coll, impostor) is False
    assert store_leases.release(coll, lease, extra_set={"last_run_status": "succeeded"}) is True
    doc = coll.find_one({"_id": "job"})
    assert doc["lease"] is None and doc["last_run_status"] == "succeeded"
    assert store_leases.release(coll, lease) is False  # twice: nothing left to release


def release_recording(coll: Collection, lease: Lease, recorded: dict[str, Any],
                      extra_filter: dict[str, Any] | None = None) -> bool:
    return applied(coll, store_leases.release_recording_cas(lease, recorded, extra_filter))


def test_release_recording_frees_the_lease_and_writes_the_outcome_once(coll: Collection) -> None:
    lease = claim(coll, "a", T0, run_id="run_1")
    outcome = {"last_run_id": "run_1", "last_run_status": "succeeded"}
    impostor = Lease(JOB, "job", "b", lease.token, lease.expires_at)
    assert release_recording(coll, impostor, outcome) is False
    assert release_recording(coll, lease, outcome, {"enabled": False}) is False  # extra filter
    assert store_leases.read(coll, JOB, "job") == lease and "last_run_id" not in coll.find_one({"_id": "job"})
    assert release_recording(coll, lease, outcome, {"enabled": True}) is True
    doc = coll.find_one({"_id": "job"})
    assert doc["lease"] is None and doc["last_run_status"] == "succeeded"
    # written again (a kept outcome retried after a lost reply): recognised as already made
    assert release_recording(coll, lease, outcome) is True
    # another holder's lease now: a stale outcome changes nothing and says so
    current = claim(coll, "b", at(1))
    assert release_recording(coll, lease, {**outcome, "last_run_id": "run_0"}) is False
    assert store_leases.read(coll, JOB, "job") == current and coll.find_one({"_id": "job"})["last_run_id"] == "run_1"


def test_renewals_are_compare_and_sets_through_the_group_commit(store: MongoStore, settings: Settings) -> None:
    """No find-and-modify (a collection scan on the MongoDB-wire server of the tests):
    one ``update`` per renewal, and a lost lease still reads as lost."""
    commands = CommandCounter()
    counting = MongoStore.open(settings, event_listeners=[commands])
    try:
        store.jobs.insert_one({"_id": "job", "lease": None, "lease_term": 0})
        lease = store_leases.claim(store.jobs, JOB, "job", "a", DURATION_MS, T0)
        assert lease is not None
        commands.take()
        renewed = counting.renew_lease(lease, 10, at(5))
        assert renewed == Lease(JOB, "job", "a", lease.token, at(15), None) == store_leases.read(store.jobs, JOB, "job")
        assert commands.take() == ["update"]
        assert counting.renew_lease(renewed, 10, at(15)) is None  # expired at 15
        assert commands.take() == ["update", "find"]  # matched nothing: read back once to tell
        assert store_leases.read(store.jobs, JOB, "job").expires_at == at(15)
        # a sub-millisecond instant is stored (and proven) as MongoDB keeps it
        again = store_leases.claim(store.jobs, JOB, "job", "a", DURATION_MS, at(20))
        odd = counting.renew_lease(again, 10, at(21) + timedelta(microseconds=1500))
        assert odd is not None and odd.expires_at == at(31.001) == store_leases.read(store.jobs, JOB, "job").expires_at
    finally:
        counting.close()


def test_extra_filter_and_extra_set_apply_in_the_same_update(coll: Collection) -> None:
    assert claim(coll, "a", T0, extra_filter={"enabled": False}) is None
    assert store_leases.read(coll, JOB, "job") is None
    lease = claim(coll, "a", T0, extra_filter={"enabled": True}, extra_set={"buffered_run_id": None, "runs": 7})
    assert lease is not None and coll.find_one({"_id": "job"})["runs"] == 7


def test_claim_of_a_missing_document(store: MongoStore) -> None:
    assert store_leases.claim(store.leases, NAMED, "nothing", "a", DURATION_MS, T0) is None
    assert store.leases.count_documents({}) == 0
    created = store_leases.claim(store.leases, NAMED, "leader", "a", DURATION_MS, T0, upsert=True)
    assert created is not None and created.token == 1
    assert store_leases.claim(store.leases, NAMED, "leader", "b", DURATION_MS, at(1), upsert=True) is None  # held: no second doc
    assert store.leases.count_documents({}) == 1
    assert store_leases.claim(store.leases, NAMED, "leader", "b", DURATION_MS, at(10), upsert=True).token == 2


def test_renew_interval_is_a_third() -> None:
    assert rules.renew_interval(30) == 10
    assert rules.renew_interval(3) == 1


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
            job = store_leases.claim(client[db]["jobs"], JOB, f"job-{round_}", holder, DURATION_MS, now)
            barrier.wait(timeout=60)
            leader = store_leases.claim(client[db]["leases"], NAMED, f"leader-{round_}", holder, DURATION_MS, now, upsert=True)
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
        assert store_leases.read(store.jobs, JOB, f"job-{round_}") == job_winners[0] and job_winners[0].token == 1
        assert store_leases.read(store.leases, NAMED, f"leader-{round_}") == leader_winners[0] and leader_winners[0].token == 1
    assert store.leases.count_documents({}) == ROUNDS


# -- the pure rules and the holder names (cronhive.leases) --------------------------


def test_a_successor_keeps_the_token_only_for_its_own_live_lease() -> None:
    mine = Lease(JOB, "job", "a", 4, at(10))
    assert rules.successor(mine, 4, JOB, "job", "a", "r", at(5), DURATION_MS) == Lease(JOB, "job", "a", 4, at(15), "r")
    assert rules.successor(mine, 4, JOB, "job", "a", None, at(10), DURATION_MS).token == 5  # expired: a new term
    assert rules.successor(mine, 4, JOB, "job", "b", None, at(11), DURATION_MS).token == 5  # another holder
    assert rules.successor(None, None, JOB, "job", "b", None, T0, DURATION_MS).token == 1  # never leased


def test_claimable_means_free_expired_or_own() -> None:
    held = Lease(JOB, "job", "a", 1, at(10))
    assert rules.claimable(None, (), T0)
    assert not rules.claimable(held, ("b",), at(9.999))
    assert rules.claimable(held, ("b",), at(10)) and rules.claimable(held, ("b", "a"), T0)


def test_holder_names_are_made_in_one_place() -> None:
    host, pid = rules.host_and_pid(rules.process_holder())
    assert host and pid is not None and pid > 0
    assert rules.reservation_holder("run_1") == "run:run_1"
    attempt = rules.attempt_holder("host:7", "run_1", 2)
    assert attempt.startswith("host:7:run_1:2:") and attempt != rules.attempt_holder("host:7", "run_1", 2)
    assert rules.pid_of("host-a:321") == 321 and rules.pid_of("no-pid-here") is None and rules.pid_of(None) is None
    assert rules.host_and_pid("no-pid-here") == ("", None)


# -- one implementation for every scope (LeaseStore) ---------------------------------


def test_one_lease_implementation_serves_job_run_and_named_leases(store: MongoStore) -> None:
    store.jobs.insert_one({"_id": "j", "lease": None, "lease_term": 0})
    store.runs.insert_one({"_id": "r", "status": "queued"})
    for scope, doc_id, coll in ((JOB, "j", store.jobs), (LeaseScope.RUN, "r", store.runs), (NAMED, "n", store.leases)):
        lease = store.claim_lease(scope, doc_id, "a", 10, T0, run_id="r")
        assert lease == Lease(scope, doc_id, "a", 1, at(10), "r")
        assert store.claim_lease(scope, doc_id, "b", 10, at(1)) is None
        assert store.read_lease(scope, doc_id) == lease
        renewed = store.renew_lease(lease, 10, at(5))
        assert renewed is not None and renewed.expires_at == at(15) and renewed.token == 1
        assert store.hand_over_lease(renewed, "run:r", at(20)) is True
        handed = store.read_lease(scope, doc_id)
        assert handed is not None and (handed.holder, handed.token, handed.expires_at) == ("run:r", 1, at(20))
        assert store.hand_over_lease(renewed, "x", at(30)) is False  # no longer held by "a": fenced
        assert store.release_lease(handed) is True and store.read_lease(scope, doc_id) is None
        assert coll.find_one({"_id": doc_id})["lease_term"] == 1


def test_a_claim_as_read_is_the_claim_the_atomic_one_would_make(store: MongoStore) -> None:
    store.jobs.insert_one({"_id": "job", "name": "j", "schedule": "* * * * *", "handler": "noop", "enabled": True,
                           "lease": None, "lease_term": 3})
    seen = store.get_job("job")
    lease = store.claim_lease(JOB, "job", "a", 10, T0, seen=seen, run_id="r1")
    assert lease == Lease(JOB, "job", "a", 4, at(10), "r1") == store.read_lease(JOB, "job")
    # as read, the lease looked free: but it changed since, so the atomic claim decides (held: refused)
    assert store.claim_lease(JOB, "job", "b", 10, at(1), seen=seen) is None
    again = store.claim_lease(JOB, "job", "a", 10, at(2), seen=store.get_job("job"))  # its own live lease
    assert again is not None and again.token == 4 and again.expires_at == at(12)
    taken = store.claim_lease(JOB, "job", "c", 10, at(12), seen=store.get_job("job"))  # expired at 12
    assert taken is not None and taken.token == 5
    assert store.jobs.find_one({"_id": "job"})["lease_term"] == 5
