"""The job's snapshot a slot run's message carries, so the worker starts it without
reading anything.

When the leader publishes a slot run it has the job document in hand (read for the
pass, committed by the pass's compare-and-set). A `JobSnapshot` of what an attempt
needs — handler, args, timeout, retries, the slot, and what identifies the state it
was taken in (the job's ``revision`` and ``incarnation``, the lease reservation's
token) — rides in the message's options (`SNAPSHOT_OPTION`; the actor's arguments
stay ``(run_id, job_id)``, so workers that predate it ignore it).

A worker takes the snapshot's path only in the common case, and then writes one
document to start: the attempt holds the job lease *as the reservation made it*
(holder ``run:<run_id>``, the reservation's token), so the job is not written at
all; the run is marked running by one compare-and-set on "not started, attempt 0,
that token, the job still at the snapshot's revision" (`MongoStore.start_reserved_run`).
The run document is where deliveries of the run exclude each other: whichever
marks it running owns the reservation, and no delivery takes a reservation of its
own run over (`RunLifecycle._own_reservation`). The job is not read, so what
the snapshot trusts is kept on the run: a job change or delete first sets its not
started runs' ``job_revision`` to None (`MongoStore.void_run_snapshots`), and the
reservation's expiry rides in the snapshot (``until``) — one that would not outlast
the keeper's next renewal pass, or that expired while nobody took it, is held for a
lease first (`MongoStore.hold_reservation`: one more write, on the job). If
anything does not apply — the job changed, paused, deleted or re-created, the
reservation expired or taken, the run cancelled or started by another delivery —
the worker reads the run and the job and decides as it always did
(`cronhive.worker.decisions`). So the snapshot can only save reads and writes; it
never decides anything the documents would decide otherwise.

Only runs whose start needs nothing else carry one (`snapshot_for`): a slot run
under ``forbid`` holding the job's reservation, of a valid job without ``notify``
(whose recovery event needs the job's last outcome as it stands at the start).

That includes the slot a ``fire_all`` job under ``forbid`` has the reservation for:
its slots queue oldest first, and the leader reserves the lease for a slot only when
no older one of the job waits (`cronhive.scheduler.overlap`), so the reserved slot is
the queue's head and its start needs no count of older ones. Such a snapshot says so
(``queues``, layout `QUEUE_VERSION`, which a worker that predates it does not use): the
attempt hands the lease on to the next waiting slot when it ends. Until 2026-12-07
these slots carried none, so every fire_all run — in the failover bench, every run —
read its run and job and counted the older slots before starting.

The next slot's hand-on carries one too: the ending attempt writes its job's outcome
with the lease made the next slot's reservation (``run:<run_id>``, the next token:
`JobStore.hand_on_recording`) instead of freeing it, and publishes the hand-on with
the job as the attempt started from it and that reservation. The run was made
without a reservation, so its start expects none on the run (``lease_token`` null)
and writes the handed one; the job revision it expects is the attempt's, so a job
changed since (its not-started runs' revision voided) is read as ever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cronhive.domain import Job
from cronhive.enums import OverlapPolicy, Trigger

#: The message option holding the snapshot.
SNAPSHOT_OPTION = "cronhive_job"
#: Version of the snapshot's layout (a worker ignores a snapshot of another version).
VERSION = 1
#: The layout of a queued slot's snapshot (``queues``): version 1 plus that flag, so a
#: worker that knows only version 1 reads the run instead of starting it without its hand-on.
QUEUE_VERSION = 2


@dataclass(frozen=True)
class JobSnapshot:
    """What a worker needs to start a slot run's first attempt, as of the publish."""

    job_id: str
    name: str
    handler: str
    args: dict[str, Any]
    timeout_s: int | None
    max_retries: int
    revision: int | None
    incarnation: str | None
    reserved_token: int
    slot: datetime
    #: when the reservation expires (None from a leader that predates it: then the worker
    #: renews the reservation before starting under it)
    reserved_until: datetime | None = None
    #: a slot of a job whose slots queue (``fire_all`` under ``forbid``): its attempt hands
    #: the lease on to the next waiting slot
    queues_slots: bool = False

    def to_option(self) -> dict[str, Any]:
        """The JSON the message carries."""
        return {
            "v": QUEUE_VERSION if self.queues_slots else VERSION,
            "queues": self.queues_slots,
            "job_id": self.job_id,
            "name": self.name,
            "handler": self.handler,
            "args": self.args,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "revision": self.revision,
            "incarnation": self.incarnation,
            "token": self.reserved_token,
            "slot": _instant(self.slot),
            "until": None if self.reserved_until is None else _instant(self.reserved_until),
        }

    @classmethod
    def from_option(cls, raw: Any) -> JobSnapshot | None:
        """The snapshot a message carries; None when it carries none, or one this worker
        cannot use (another version, a malformed one): then the run is read."""
        if not isinstance(raw, Mapping) or raw.get("v") not in (VERSION, QUEUE_VERSION):
            return None
        try:
            slot = _parse_instant(raw["slot"])
            until = raw.get("until")
            reserved_until = None if until is None else _parse_instant(until)
            snapshot = cls(job_id=str(raw["job_id"]), name=str(raw["name"]), handler=str(raw["handler"]),
                           args=dict(raw["args"]), timeout_s=_optional_int(raw["timeout_s"]),
                           max_retries=_int(raw["max_retries"]), revision=_optional_int(raw["revision"]),
                           incarnation=None if raw["incarnation"] is None else str(raw["incarnation"]),
                           reserved_token=_int(raw["token"]), slot=slot, reserved_until=reserved_until,
                           queues_slots=raw["v"] == QUEUE_VERSION and raw.get("queues") is True)
        except (KeyError, TypeError, ValueError):
            return None
        return snapshot


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def _parse_instant(raw: Any) -> datetime:
    at = datetime.fromisoformat(str(raw))
    if at.tzinfo is None:
        raise ValueError(f"no offset: {raw!r}")
    return at


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r}")
    return value


def _optional_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def snapshot_for(job: Job, trigger: Trigger, slot: datetime, reserved_token: int | None,
                 reserved_until: datetime | None = None) -> JobSnapshot | None:
    """The snapshot a run of ``job`` for ``slot`` is published with, when its start needs
    nothing but it (see the module docstring); None otherwise."""
    if (trigger != Trigger.SCHEDULE or reserved_token is None or job.overlap_policy != OverlapPolicy.FORBID
            or job.notify is not None or job.invalid_reason is not None):
        return None
    return JobSnapshot(job_id=job.job_id, name=job.name, handler=job.handler, args=dict(job.args),
                       timeout_s=job.timeout_s, max_retries=job.max_retries, revision=job.revision,
                       incarnation=job.incarnation, reserved_token=int(reserved_token), slot=slot,
                       reserved_until=reserved_until, queues_slots=job.queues_slots)


__all__ = ["SNAPSHOT_OPTION", "JobSnapshot", "snapshot_for"]
