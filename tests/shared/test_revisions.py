"""Job revisions in the store (real MongoDB-wire server): one per create, update,
pause, resume, delete and scheduler disable, numbered like the job's revision;
``changes`` for every mutable field; the history of a deleted job; repair after a
crash between the job's write and its revision's; the definition at any instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cronhive.enums import RevisionAction
from cronhive.errors import JobNotFound, PreconditionFailed
from cronhive.revisions import DEFINITION_FIELDS, SCHEDULER_ACTOR, definition_at
from cronhive.store import MongoStore
from cronhive.store.revisions import RevisionStore

T0 = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"job_id": "j", "name": "Nightly", "schedule": "0 3 * * *", "handler": "noop"}
    base.update(changes)
    return base


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def history(store: MongoStore, job_id: str = "j") -> list[tuple[int, str, str | None, dict[str, Any]]]:
    revisions, total = store.job_revisions(job_id, 1, 100)
    assert total == len(revisions)
    return [(r.revision, r.action, r.actor, {k: list(v) for k, v in r.changes.items()}) for r in revisions]


def test_every_change_is_one_revision_newest_first(store: MongoStore) -> None:
    created = store.create_job(fields(), at(0), actor="alice")
    store.update_job("j", {"schedule": "0 4 * * *"}, at(1), actor="bob")
    store.update_job("j", {"enabled": False}, at(2), actor="bob")
    store.update_job("j", {"enabled": True}, at(3), actor="carol")
    store.delete_job("j", at(4), actor="alice")

    revisions, total = store.job_revisions("j", 1, 100)
    assert total == 5
    assert [(r.revision, r.action, r.actor, r.at) for r in revisions] == [
        (5, RevisionAction.DELETE, "alice", at(4)),
        (4, RevisionAction.RESUME, "carol", at(3)),
        (3, RevisionAction.PAUSE, "bob", at(2)),
        (2, RevisionAction.UPDATE, "bob", at(1)),
        (1, RevisionAction.CREATE, "alice", at(0)),
    ]
    assert revisions[3].changes == {"schedule": ("0 3 * * *", "0 4 * * *")}
    assert revisions[2].changes == {"enabled": (True, False)}
    create = revisions[4]
    modelled = {name for name in DEFINITION_FIELDS if hasattr(created, name)}
    assert set(create.changes) == modelled >= set(MUTABLE) | {"disabled_reason"}
    assert all(old is None for old, _ in create.changes.values())
    assert create.changes["schedule"] == (None, "0 3 * * *")
    assert revisions[0].changes["schedule"] == ("0 4 * * *", None)  # the delete: every field, new null
    assert revisions[0].definition["schedule"] == "0 4 * * *"  # as it was when deleted


MUTABLE: dict[str, tuple[Any, Any]] = {
    "name": ("Nightly", "Nightly export"),
    "schedule": ("0 3 * * *", "*/5 * * * *"),
    "handler": ("noop", "sleep"),
    "timezone": ("UTC", "Europe/Berlin"),
    "args": ({}, {"seconds": 1, "tags": ["a"]}),
    "enabled": (True, False),
    "misfire_policy": ("fire_once", "fire_all"),
    "misfire_grace_s": (60, 120),
    "overlap_policy": ("forbid", "buffer_one"),
    "jitter_s": (0, 7),
    "timeout_s": (3600, 90),
    "max_retries": (0, 3),
    "tags": ([], ["billing", "nightly"]),
}


@pytest.mark.parametrize("name", list(MUTABLE))
def test_changes_name_old_and_new_of_every_mutable_field(store: MongoStore, name: str) -> None:
    old, new = MUTABLE[name]
    store.create_job(fields(), at(0))
    job = store.update_job("j", {name: new}, at(1), actor="bob")
    revision = store.job_revisions("j", 1, 1)[0][0]
    assert revision.revision == job.revision == 2
    assert revision.changes == {name: (old, new)}
    assert revision.definition[name] == new


def test_several_fields_at_once_and_a_no_op_update(store: MongoStore) -> None:
    store.create_job(fields(), at(0))
    store.update_job("j", {"enabled": False, "schedule": "0 5 * * *"}, at(1))
    store.update_job("j", {"name": "Nightly"}, at(2))  # the same value: a revision with nothing changed
    assert history(store)[:2] == [
        (3, "update", None, {}),
        (2, "update", None, {"enabled": [True, False], "schedule": ["0 3 * * *", "0 5 * * *"]}),
    ]


def test_a_deleted_jobs_history_stays_and_a_new_job_of_that_id_continues_it(store: MongoStore) -> None:
    store.create_job(fields(), at(0), actor="a")
    store.delete_job("j", at(1), actor="a")
    assert [r[:2] for r in history(store)] == [(2, "delete"), (1, "create")]
    job = store.create_job(fields(schedule="0 9 * * *"), at(2), actor="b")
    assert job.revision == 3 and store.get_job("j").revision == 3
    assert [r[:3] for r in history(store)] == [(3, "create", "b"), (2, "delete", "a"), (1, "create", "a")]
    with pytest.raises(JobNotFound):
        store.job_revisions("never-existed", 1, 20)


def test_pages_newest_first(store: MongoStore) -> None:
    store.create_job(fields(), at(0))
    for minute in range(1, 7):
        store.update_job("j", {"misfire_grace_s": minute}, at(minute))
    page, total = store.job_revisions("j", 2, 3)
    assert total == 7 and [r.revision for r in page] == [4, 3, 2]
    assert [r.revision for r in store.revision_history("j")] == list(range(1, 8))


def test_a_crash_after_the_job_write_is_repaired_from_the_job(store: MongoStore) -> None:
    store.create_job(fields(), at(0), actor="a")
    store.update_job("j", {"schedule": "0 4 * * *"}, at(1), actor="a")
    store.revisions.delete_one({"_id": "j:2"})  # the update's revision was never written
    store.update_job("j", {"max_retries": 2}, at(2), actor="b")
    assert history(store) == [
        (3, "update", "b", {"max_retries": [0, 2]}),
        (2, "update", None, {"schedule": ["0 3 * * *", "0 4 * * *"]}),  # repaired: the actor is lost
        (1, "create", "a", history(store)[2][3]),
    ]
    assert store.revision_history("j")[1].at == at(1)  # the job's updated_at


def test_reading_repairs_a_lost_create_and_a_job_older_than_revisions(store: MongoStore) -> None:
    store.create_job(fields(), at(0), actor="a")
    store.revisions.delete_many({})
    assert history(store)[0][:3] == (1, "create", None)
    store.create_job(fields(job_id="legacy"), at(0))
    store.jobs.update_one({"_id": "legacy"}, {"$set": {"revision": 7, "updated_at": at(5)}})
    store.revisions.delete_many({"job_id": "legacy"})
    (only,) = store.revision_history("legacy")
    assert (only.revision, only.action, only.at) == (7, RevisionAction.CREATE, at(0))  # known since created


def test_a_crashed_delete_leaves_a_record_that_is_not_shown_and_is_replaced(store: MongoStore) -> None:
    store.create_job(fields(), at(0))
    job = store.get_job("j")
    from cronhive.revisions import deletion

    store.insert_revision(deletion(job, "crasher", at(1), "w1"))  # then the process died before deleting
    assert [r[0] for r in history(store)] == [1]
    store.update_job("j", {"name": "renamed"}, at(2), actor="b")
    assert [r[:3] for r in history(store)] == [(2, "update", "b"), (1, "create", None)]
    store.insert_revision(deletion(store.get_job("j"), "crasher", at(3), "w2"))
    store.delete_job("j", at(3) + timedelta(minutes=5), actor="c")  # the crashed one is stale: taken over
    assert [r[:3] for r in history(store)][:1] == [(3, "delete", "c")]


def test_if_match_is_the_compare_and_set(store: MongoStore) -> None:
    store.create_job(fields(), at(0))
    assert store.update_job("j", {"name": "x"}, at(1), expected_revision=1).revision == 2
    with pytest.raises(PreconditionFailed) as refused:
        store.update_job("j", {"name": "y"}, at(2), expected_revision=1)
    assert refused.value.details == {"job_id": "j", "revision": 2, "if_match": 1}
    with pytest.raises(PreconditionFailed):
        store.delete_job("j", at(2), expected_revision=1)
    assert store.get_job("j").name == "x" and [r[0] for r in history(store)] == [2, 1]
    store.delete_job("j", at(3), expected_revision=2)
    assert store.find_job("j") is None


def test_the_schedulers_disable_is_a_pause_by_the_scheduler(store: MongoStore) -> None:
    store.create_job(fields(), at(0))
    assert store.disable_job("j", 1, "the schedule never fires", at(1), term=1)
    newest = store.job_revisions("j", 1, 1)[0][0]
    assert (newest.revision, newest.action, newest.actor) == (2, RevisionAction.PAUSE, SCHEDULER_ACTOR)
    assert newest.changes == {"enabled": (True, False), "disabled_reason": (None, "the schedule never fires")}
    assert store.get_job("j").revision == 2


def test_the_definition_at_any_instant(store: MongoStore) -> None:
    store.create_job(fields(timezone="Europe/Berlin"), at(0))
    store.update_job("j", {"schedule": "0 4 * * *"}, at(10))
    store.update_job("j", {"timezone": "UTC"}, at(20))
    store.delete_job("j", at(30))
    revisions = store.revision_history("j")
    assert definition_at(revisions, at(-1)) is None
    assert (definition_at(revisions, at(0)) or {})["schedule"] == "0 3 * * *"
    assert (definition_at(revisions, at(15)) or {})["schedule"] == "0 4 * * *"
    assert (definition_at(revisions, at(15)) or {})["timezone"] == "Europe/Berlin"
    assert (definition_at(revisions, at(25)) or {})["timezone"] == "UTC"
    assert definition_at(revisions, at(30)) is None


def test_the_revisions_index_is_unique_per_job_and_revision(store: MongoStore) -> None:
    index = store.revisions.index_information()["job_revision"]
    assert index["unique"] is True and index["key"] == [("job_id", 1), ("revision", -1)]
    assert isinstance(store, RevisionStore)
