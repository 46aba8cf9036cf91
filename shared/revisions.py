"""Job revisions: who changed a job's definition, when, and how.

Every create, update, delete, pause and resume of a job is one `Revision`
(collection ``job_revisions``, one document per ``(job_id, revision)``), numbered
like the job's own ``revision`` counter — the counter updates compare-and-set on
and the ``ETag`` the API answers — so revision ``n`` of the history is the change
that moved the job to ``n``. Each revision carries the job's whole definition as
it was after the change (`DEFINITION_FIELDS`; for a delete: as it was when
deleted), so the definition at any instant is the newest revision at or before
it (`definition_at`) — what the slot ledger computes past slots from.

Pure values and functions; the store (`cronhive.store.revisions`) writes and reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cronhive.domain import Job, format_instant
from cronhive.enums import RevisionAction

#: The fields of a job that make its definition: what a revision snapshots and diffs.
#: (A new mutable job field is added here, and nothing else changes; a field the
#: `Job` does not have — ``tags`` until jobs carry them — is left out.)
DEFINITION_FIELDS: tuple[str, ...] = (
    "name", "schedule", "timezone", "handler", "args", "enabled", "misfire_policy", "misfire_grace_s",
    "overlap_policy", "jitter_s", "timeout_s", "max_retries", "disabled_reason", "tags",
)

#: The actor of changes made while no token is configured (writes are open).
ANONYMOUS = "anonymous"
#: The actor of changes the scheduler makes (disabling a job it cannot plan).
SCHEDULER_ACTOR = "scheduler"

Definition = Mapping[str, Any]
Changes = Mapping[str, tuple[Any, Any]]


def _plain(value: Any) -> Any:
    """A field's value as stored and shown: enums as their strings, tuples as lists."""
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return str(value)  # a StrEnum member as its plain string
    return value


def definition_of(job: Job) -> dict[str, Any]:
    """The job's definition (`DEFINITION_FIELDS`), as plain values."""
    return {name: _plain(getattr(job, name)) for name in DEFINITION_FIELDS if hasattr(job, name)}


def diff(before: Definition | None, after: Definition) -> dict[str, tuple[Any, Any]]:
    """``{field: (old, new)}`` for each field that differs (every field, old None, when
    there was no ``before``: a create)."""
    old: Definition = before or {}
    return {name: (old.get(name), value) for name, value in after.items()
            if before is None or old.get(name) != value}


def action_of(before: Definition | None, after: Definition) -> RevisionAction:
    """What a change is: a create (no ``before``), a pause or resume (``enabled`` is the
    only field changed by the client — the scheduler's ``disabled_reason`` may go
    with it), otherwise an update."""
    if before is None:
        return RevisionAction.CREATE
    changed = set(diff(before, after)) - {"disabled_reason"}
    if changed == {"enabled"}:
        return RevisionAction.RESUME if after.get("enabled") else RevisionAction.PAUSE
    return RevisionAction.UPDATE


@dataclass(frozen=True)
class Revision:
    """One change of a job: it moved the job to ``revision`` at ``at`` (the database
    clock), made by ``actor`` (a token's name; None when unknown: a revision the
    store repaired after a crash between the job's write and its revision's).
    ``definition``: the job's definition after the change (for a delete: before it)."""

    job_id: str
    revision: int
    at: datetime
    actor: str | None
    action: RevisionAction
    changes: Changes
    definition: Definition
    #: a random id of the write that made it (lets a write tell its record from another's)
    write_id: str = field(default="", compare=False)

    @property
    def deleted(self) -> bool:
        return self.action == RevisionAction.DELETE

    def view(self) -> dict[str, Any]:
        """As ``GET /jobs/{id}/revisions`` shows it."""
        return {
            "revision": self.revision,
            "at": format_instant(self.at),
            "actor": self.actor,
            "action": self.action,
            "changes": {name: [old, new] for name, (old, new) in self.changes.items()},
        }


def new_revision(job: Job, before: Definition | None, actor: str | None, at: datetime, write_id: str = "",
                 action: RevisionAction | None = None) -> Revision:
    """The revision that moved ``job`` (as written) from ``before`` (None: it was created)."""
    after = definition_of(job)
    return Revision(job_id=job.job_id, revision=int(job.revision or 0), at=at, actor=actor,
                    action=action or action_of(before, after), changes=diff(before, after), definition=after,
                    write_id=write_id)


def deletion(job: Job, actor: str | None, at: datetime, write_id: str = "") -> Revision:
    """The revision that deletes ``job`` (as last read): the revision after its own;
    ``changes`` every field, new None."""
    last = definition_of(job)
    return Revision(job_id=job.job_id, revision=int(job.revision or 0) + 1, at=at, actor=actor,
                    action=RevisionAction.DELETE, changes={name: (value, None) for name, value in last.items()},
                    definition=last, write_id=write_id)


def definition_at(history: Sequence[Revision], instant: datetime) -> Definition | None:
    """The job's definition in effect at ``instant`` per its ``history`` (any order):
    the newest revision made at or before it; None when the job did not exist then
    (before its first revision, or after its delete)."""
    current: Revision | None = None
    for revision in history:
        if revision.at <= instant and (current is None or revision.revision > current.revision):
            current = revision
    if current is None or current.deleted:
        return None
    return current.definition


__all__ = [
    "ANONYMOUS",
    "DEFINITION_FIELDS",
    "SCHEDULER_ACTOR",
    "Revision",
    "action_of",
    "definition_at",
    "definition_of",
    "deletion",
    "diff",
    "new_revision",
]
