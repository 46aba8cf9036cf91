"""Group commit against the real MongoDB-wire store: batched writes, exact
compare-and-set outcomes, and processes racing to claim the same documents."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

from pymongo import InsertOne

from cronhive.domain import utcnow, whole_ms
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.store.base import by_id
from cronhive.store.group_commit import GroupCommit, Outcome, cas, holds, pipelined

ROOT = Path(__file__).resolve().parents[2]


def test_an_idle_committer_writes_at_once_and_a_busy_one_batches(store: MongoStore) -> None:
    coll = store.db["gc"]
    coll.insert_many([{"_id": i, "n": 0} for i in range(800)])
    commit = GroupCommit(coll)
    assert commit.submit(cas(0, {"n": 0}, {"$set": {"n": 1}}, holds({"n": 1}))) is Outcome.APPLIED
    assert (commit.commands, commit.operations) == (1, 1)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def work(part: int) -> None:
        for i in range(1 + part * 50, 1 + (part + 1) * 50):
            outcome = commit.submit(cas(i, {"n": 0}, {"$set": {"n": 1}}, holds({"n": 1})))
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=work, args=(part,)) for part in range(15)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [Outcome.APPLIED] * 750
    assert coll.count_documents({"n": 1}) == 751
    assert commit.commands < commit.operations  # batches formed while one was in flight


def test_compare_and_set_outcomes_are_exact(store: MongoStore) -> None:
    coll = store.db["gc"]
    coll.insert_many([{"_id": "a", "v": 1}, {"_id": "b", "v": 1}, {"_id": "d", "lease": {"holder": "x", "token": 3}}])
    commit = GroupCommit(coll)
    outcomes = commit.submit_many([
        cas("a", {"v": 1}, {"$set": {"v": 2}}, holds({"v": 2})),     # matches
        cas("b", {"v": 7}, {"$set": {"v": 2}}, holds({"v": 2})),     # stale expectation
        cas("gone", {"v": 1}, {"$set": {"v": 2}}, holds({"v": 2})),  # no such document
        InsertOne({"_id": "a"}),                                     # id taken
        InsertOne({"_id": "c", "v": 1}),
        cas("d", {"lease.holder": "x", "lease.token": 3}, {"$set": {"lease": {"holder": "y", "token": 4}}},
            holds({"lease.holder": "y", "lease.token": 4})),         # dotted paths, replaced subdocument
        cas("d", {"lease.holder": "x", "lease.token": 3}, {"$set": {"lease": {"holder": "z", "token": 4}}},
            holds({"lease.holder": "z", "lease.token": 4})),         # the same claim, lost to the one before
    ])
    assert outcomes == [Outcome.APPLIED, Outcome.CONFLICT, Outcome.MISSING, Outcome.CONFLICT, Outcome.APPLIED,
                        Outcome.APPLIED, Outcome.CONFLICT]
    assert {d["_id"]: d.get("v") for d in coll.find()} == {"a": 2, "b": 1, "c": 1, "d": None}
    assert coll.find_one({"_id": "d"})["lease"] == {"holder": "y", "token": 4}
    assert coll.count_documents({"_id": "gone"}) == 0  # nothing upserted, ever
    assert commit.commands == 2  # the batch, and one read-back because some matched nothing


def test_a_batch_where_everything_matched_is_not_read_back(store: MongoStore) -> None:
    coll = store.db["gc"]
    coll.insert_many([{"_id": i, "n": 0} for i in range(5)])
    commit = GroupCommit(coll)
    writes = [cas(i, {"n": 0}, {"$set": {"n": 1}}, holds({"n": 1})) for i in range(5)]
    assert commit.submit_many(writes) == [Outcome.APPLIED] * 5
    assert commit.commands == 1


RACER = r'''
import json, sys, threading
from cronhive.store.group_commit import GroupCommit, Outcome, cas, holds, pipelined
from cronhive.settings import Settings
from cronhive.store import MongoStore
settings = Settings.from_env({"MONGODB_URI": sys.argv[1], "MONGODB_DB": sys.argv[2]})
name, count = sys.argv[3], int(sys.argv[4])
store = MongoStore.open(settings)
commit = GroupCommit(store.db["claims"])
won = []
lock = threading.Lock()
def claim(thread):
    holder = f"{name}:{thread}"
    for i in range(count):
        claim = cas(f"run_{i}", {"holder": None}, {"$set": {"holder": holder}}, holds({"holder": holder}))
        if commit.submit(claim) is Outcome.APPLIED:
            with lock:
                won.append((f"run_{i}", holder))
threads = [threading.Thread(target=claim, args=(t,)) for t in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps({"won": won, "batches": commit.batches, "operations": commit.operations}))
'''


def test_processes_racing_to_claim_the_same_documents_each_win_one_exactly_once(
        store: MongoStore, settings: Settings) -> None:
    count = 300
    store.db["claims"].insert_many([{"_id": f"run_{i}", "holder": None} for i in range(count)])
    racers = [subprocess.Popen([sys.executable, "-c", RACER, settings.mongodb_uri, settings.mongodb_db, f"p{n}",
                                str(count)], stdout=subprocess.PIPE, cwd=ROOT, text=True) for n in range(4)]
    reports = [json.loads(racer.communicate(timeout=300)[0]) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    winners = Counter(run_id for report in reports for run_id, _ in report["won"])
    assert set(winners) == {f"run_{i}" for i in range(count)} and set(winners.values()) == {1}
    stored = {doc["_id"]: doc["holder"] for doc in store.db["claims"].find()}
    assert all(stored[run_id] == holder for report in reports for run_id, holder in report["won"])
    # batches formed (each batch that lost some claim also cost one read-back)
    assert sum(r["batches"] for r in reports) < sum(r["operations"] for r in reports)


def test_a_compare_and_set_filter_matches_exactly_what_the_plain_filter_matches(store: MongoStore) -> None:
    """`by_id` spells bare conditions ``{"$all": [v]}`` for the embedded store's planner;
    it must select the same documents as the plain equality, on every shape a
    compare-and-set expects: values, null against null and missing, arrays, subdocuments,
    dotted paths, and operator conditions left as they are."""
    coll = store.db["spelled"]
    at = whole_ms(utcnow())
    docs = [
        {"_id": 1, "v": 1, "s": "a", "n": None, "lease": {"holder": "x", "token": 3}, "tags": ["p", "q"], "at": at},
        {"_id": 2, "v": 2, "s": "b", "lease": None, "tags": [], "at": at + timedelta(milliseconds=1)},
        {"_id": 3, "v": [1, 2], "s": None, "n": 0, "lease": {"holder": "y", "token": 3}, "tags": ["q"]},
        {"_id": 4, "sub": {"a": 1, "b": 2}, "lease": {"holder": "x", "token": 4}},
        {"_id": 5, "v": 1.0, "s": "a", "n": False, "enabled": True},
    ]
    coll.insert_many(docs)
    expectations = [
        {"v": 1}, {"v": 2}, {"v": [1, 2]}, {"s": "a"}, {"s": None}, {"n": None}, {"n": 0}, {"n": False},
        {"lease": None}, {"lease.holder": "x"}, {"lease.holder": "x", "lease.token": 3}, {"lease.token": 3},
        {"lease.holder": None}, {"tags": "q"}, {"tags": []}, {"tags": ["p", "q"]}, {"sub": {"a": 1, "b": 2}},
        {"sub": {"b": 2, "a": 1}}, {"sub.a": 1}, {"missing": None}, {"v": 1, "s": {"$in": ["a", "b"]}},
        {"v": {"$lt": 2}, "lease.holder": "x"}, {"sched_term": {"$not": {"$gt": 3}}, "s": "a"}, {"at": at},
        {"enabled": True},
    ]
    for expected in expectations:
        for doc_id in range(1, 6):
            plain = coll.count_documents({"_id": doc_id, **expected})
            spelled = coll.count_documents(by_id(doc_id, expected))
            assert spelled == plain, (doc_id, expected, by_id(doc_id, expected))
    assert by_id(7, {"v": 1, "s": {"$in": ["a"]}}) == {"_id": 7, "v": {"$all": [1]}, "s": {"$in": ["a"]}}


def test_a_pipelined_compare_and_set_applies_exactly_where_the_plain_one_does(store: MongoStore) -> None:
    """Compare-and-sets of one shape go as one pipelined ``UpdateMany`` (`pipelined`): for
    every expectation it translates, on every document shape, the documents it rewrites
    are those the plain filter matches, and each ends as the plain update leaves it."""
    at = whole_ms(utcnow())
    docs = [
        {"_id": 1, "v": 1, "s": "a", "n": None, "lease": {"holder": "x", "token": 3}, "tags": ["p", "q"], "at": at},
        {"_id": 2, "v": 2, "s": "b", "lease": None, "tags": [], "at": at + timedelta(milliseconds=1)},
        {"_id": 3, "v": [1, 2], "s": None, "n": 0, "lease": {"holder": "y", "token": 3}, "tags": ["q"], "out": "o"},
        {"_id": 4, "sub": {"a": 1, "b": 2}, "lease": {"holder": "x", "token": 4}, "log": [1, 2, 3]},
        {"_id": 5, "v": 1.0, "s": "a", "n": False, "enabled": True},
    ]
    expectations = [
        {"v": 1}, {"v": 2}, {"s": "a"}, {"s": None}, {"n": None}, {"n": 0}, {"n": False}, {"lease": None},
        {"lease.holder": "x"}, {"lease.holder": "x", "lease.token": 3}, {"lease.holder": None}, {"tags": "q"},
        {"sub.a": 1}, {"missing": None}, {"v": 1, "s": {"$in": ["a", "b"]}}, {"s": {"$in": [None, "b"]}},
        {"tags": {"$in": ["p", "z"]}}, {"at": at}, {"enabled": True}, {}, {"v": {"$not": {"$gt": 1}}},
        {"n": {"$not": {"$gt": -1}}}, {"s": {"$not": {"$gt": 0}}, "lease": None}, {"missing": {"$not": {"$gt": 3}}},
    ]
    update = {"$set": {"w": "written", "lease": {"holder": "new", "token": 9}}, "$unset": {"out": ""},
              "$push": {"log": {"$each": [{"k": "$not_an_expression"}], "$slice": -3}},
              "$max": {"at": at + timedelta(milliseconds=1)}}
    plain_coll, piped_coll = store.db["plain"], store.db["piped"]
    for number, expected in enumerate(expectations):
        plain_coll.delete_many({})
        piped_coll.delete_many({})
        plain_coll.insert_many(docs)
        piped_coll.insert_many(docs)
        writes = [cas(doc["_id"], expected, update, holds({"w": "written"})) for doc in docs]
        assert all(write.shape == writes[0].shape is not None for write in writes), expected
        for write in writes:
            plain_coll.update_one({"_id": write.doc_id, **expected}, update)
        result = piped_coll.bulk_write([pipelined(writes)])
        assert result.modified_count == plain_coll.count_documents({"w": "written"}), (number, expected)
        assert list(piped_coll.find({}, sort=[("_id", 1)])) == list(plain_coll.find({}, sort=[("_id", 1)])), expected


def test_only_what_translates_exactly_is_pipelined() -> None:
    def shape(expected: dict[str, object], update: dict[str, object]) -> object:
        return cas("a", expected, update, holds({})).shape

    assert shape({"v": 1, "s": None, "t": {"$in": ["a", None]}}, {"$set": {"x": {"k": 1}}, "$unset": {"y": ""},
                                                                  "$push": {"z": 1}}) is not None
    for expected in ({"v": [1, 2]}, {"v": {"a": 1}}, {"v": {"$gt": 1}}, {"v": {"$in": [[1]]}}, {"$or": []},
                     {"v": {"$not": {"$gt": "a"}}}, {"v": {"$not": {"$gte": 1}}}):
        assert shape(expected, {"$set": {"x": 1}}) is None, expected
    for update in ({"$inc": {"x": 1}}, {"$set": {"a.b": 1}}, {"$set": {"_id": 1}}, {"$push": {"z": {"$each": [1],
                   "$position": 0}}}, {"$set": {"x": 1}, "$unset": {"x": ""}}, [{"$set": {"x": 1}}]):
        assert shape({"v": 1}, update) is None, update  # type: ignore[arg-type]


def test_a_batch_of_one_shape_is_one_statement_and_its_conflicts_are_exact(store: MongoStore) -> None:
    coll = store.db["gc"]
    coll.insert_many([{"_id": i, "n": 0, "holder": None} for i in range(120)])
    coll.update_one({"_id": 7}, {"$set": {"n": 5}})
    commit = GroupCommit(coll)
    statements: list[int] = []
    real_bulk_write = coll.bulk_write

    def counting(ops: list[object], **kwargs: object) -> object:
        statements.append(len(ops))
        return real_bulk_write(ops, **kwargs)  # type: ignore[arg-type]

    commit.collection = type("Counted", (), {"bulk_write": staticmethod(counting),  # type: ignore[assignment]
                                             "find": coll.find})()
    writes = [cas(i, {"n": 0}, {"$set": {"n": 1, "holder": f"h{i}"}}, holds({"holder": f"h{i}"})) for i in range(120)]
    writes += [cas(3, {"n": 0}, {"$set": {"n": 1, "holder": "again"}}, holds({"holder": "again"})),  # same doc
               cas("gone", {"n": 0}, {"$set": {"n": 1, "holder": "x"}}, holds({"holder": "x"}))]
    outcomes = commit.submit_many(writes)
    assert statements == [3]  # chunks of 50 distinct documents: the repeated one goes in another chunk
    expected = [Outcome.CONFLICT if i == 7 else Outcome.APPLIED for i in range(120)]
    assert outcomes == [*expected, Outcome.CONFLICT, Outcome.MISSING]
    assert coll.count_documents({"n": 1}) == 119 and coll.find_one({"_id": 3})["holder"] == "h3"
    assert coll.find_one({"_id": 7}) == {"_id": 7, "n": 5, "holder": None}
