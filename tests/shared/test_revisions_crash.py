"""A process SIGKILLed between a job's write and its revision's (no transactions):
the history is repaired from the job, and a delete that died half-way shows nothing
that did not happen."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime

from cronhive.enums import RevisionAction
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests.shared.test_revisions import fields

T0 = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)

PRELUDE = """
import os, signal, sys
from datetime import datetime, UTC
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.store.revisions import RevisionStore
store = MongoStore.open(Settings.from_env({"MONGODB_URI": sys.argv[1], "MONGODB_DB": sys.argv[2]}))
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def run_and_die(settings: Settings, body: str) -> int:
    script = PRELUDE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script, settings.mongodb_uri, settings.mongodb_db],
                          capture_output=True, text=True, timeout=60)
    return done.returncode


def test_killed_after_the_job_write_the_revision_is_repaired(settings: Settings, store: MongoStore) -> None:
    store.create_job(fields(), T0, actor="alice")
    code = run_and_die(settings, """
        RevisionStore.write_revision = die   # the job is written, its revision never is
        store.update_job("j", {"schedule": "0 4 * * *"}, datetime(2026, 3, 26, 10, 5, tzinfo=UTC), actor="bob")
    """)
    assert code == -9
    assert store.get_job("j").revision == 2 and store.revisions.count_documents({"job_id": "j"}) == 1
    newest = store.job_revisions("j", 1, 1)[0][0]
    assert (newest.revision, newest.action, newest.actor) == (2, RevisionAction.UPDATE, None)
    assert newest.changes == {"schedule": ("0 3 * * *", "0 4 * * *")}
    assert newest.at == datetime(2026, 3, 26, 10, 5, tzinfo=UTC)
    store.update_job("j", {"enabled": False}, T0, actor="carol")
    assert [r.revision for r in store.revision_history("j")] == [1, 2, 3]


def test_killed_between_a_deletes_revision_and_its_delete_nothing_is_shown(settings: Settings,
                                                                          store: MongoStore) -> None:
    store.create_job(fields(), T0, actor="alice")
    code = run_and_die(settings, """
        insert = RevisionStore.insert_revision
        def insert_then_die(self, revision):
            insert(self, revision)
            die()
        RevisionStore.insert_revision = insert_then_die
        store.delete_job("j", datetime(2026, 3, 26, 10, 5, tzinfo=UTC), actor="bob")
    """)
    assert code == -9
    assert store.find_job("j") is not None  # the delete did not happen ...
    assert [r.action for r in store.revision_history("j")] == [RevisionAction.CREATE]  # ... and is not shown
    store.update_job("j", {"name": "kept"}, T0, actor="carol")  # the next change takes its number
    assert [(r.revision, r.action, r.actor) for r in store.revision_history("j")] == [
        (1, RevisionAction.CREATE, "alice"), (2, RevisionAction.UPDATE, "carol")]
