"""Helpers of the worker tests.

In-process tests drive `RunLifecycle` directly: a `FakeClock` moved by hand (lease
expiry without sleeping), a `RecordingBroker` that keeps what the middleware
publishes, and `Delivery`, one delivery of a run message with its own context
(the way one worker thread processes it), against the real MongoDB-wire store.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from cronhive.broker import run_message
from cronhive.dispatch import TriggerResult, trigger_job
from cronhive.domain import Job, new_run, new_run_id, utcnow
from cronhive.enums import LeaseScope, Trigger
from cronhive.leases import reservation_holder
from cronhive.settings import Settings
from cronhive.snapshots import snapshot_for
from cronhive.store import MongoStore
from cronhive.worker.attempts import Attempt, current_attempt
from cronhive.worker.keeper import LeaseKeeper
from cronhive.worker.middleware import RunLifecycle

LEASE_S = 3


class FakeClock:
    """The database clock, moved by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> datetime:
        self.current += timedelta(seconds=seconds)
        return self.current


@dataclass
class Published:
    message: Message
    delay: int | None


@dataclass
class RecordingBroker:
    """Stands in for the RabbitMQ broker in the middleware's hooks: keeps what is published."""

    published: list[Published] = field(default_factory=list)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        self.published.append(Published(message, delay))
        return message

    def take(self) -> list[Published]:
        taken, self.published = self.published, []
        return taken


class RecordingPublisher:
    """`RunPublisher` stand-in for `trigger_job`: the run is 'confirmed' at once."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []

    def publish_run(self, run_id: str, job_id: str) -> None:
        self.runs.append((run_id, job_id))


class Delivery:
    """One delivery of a message to one worker thread (its own context variables)."""

    def __init__(self, lifecycle: RunLifecycle, broker: RecordingBroker, message: Message,
                 *, redelivered: bool = False) -> None:
        self.lifecycle = lifecycle
        self.broker = broker
        self.proxy = MessageProxy(message)
        self.proxy.redelivered = redelivered  # what the RabbitMQ consumer sets
        self.context = contextvars.Context()
        self.attempt: Attempt | None = None

    def begin(self) -> Attempt | None:
        """``before_process_message``: the started attempt, or None (message acknowledged)."""
        try:
            self.context.run(self.lifecycle.before_process_message, self.broker, self.proxy)
        except SkipMessage:
            return None
        self.attempt = self.context.run(current_attempt)
        return self.attempt

    def end(self, exception: BaseException | None = None, result: Any = None) -> None:
        """``after_process_message`` after the handler returned ``result`` or raised ``exception``."""
        self.context.run(self.lifecycle.after_process_message, self.broker, self.proxy, exception=exception,
                         result=result)

    @property
    def failed(self) -> bool:
        """Rejected, so RabbitMQ dead-letters it."""
        return self.proxy.failed


@dataclass
class Harness:
    store: MongoStore
    settings: Settings
    clock: FakeClock
    broker: RecordingBroker
    publisher: RecordingPublisher
    keeper: LeaseKeeper
    lifecycle: RunLifecycle

    def job(self, job_id: str, **fields: Any) -> Job:
        body = {"job_id": job_id, "name": job_id, "schedule": "0 0 1 1 *", "handler": "noop", "enabled": False,
                **fields}
        return self.store.create_job(body, self.clock.now())

    def trigger(self, job_id: str) -> TriggerResult:
        return trigger_job(self.store, self.publisher, job_id, self.clock.now(), LEASE_S)

    def message(self, run_id: str) -> Message:
        return run_message(self.settings.runs_queue, run_id, self.store.get_run(run_id).job_id)

    def deliver(self, run_id: str, *, redelivered: bool = False) -> Delivery:
        return Delivery(self.lifecycle, self.broker, self.message(run_id), redelivered=redelivered)

    def deliver_message(self, message: Message, *, redelivered: bool = False,
                        lifecycle: RunLifecycle | None = None) -> Delivery:
        return Delivery(lifecycle or self.lifecycle, self.broker, message, redelivered=redelivered)

    def slot(self, job_id: str, slot: datetime | None = None) -> tuple[str, Message]:
        """A slot run made the way the leader makes one under ``forbid`` (the job's lease
        reserved for it, the run queued) and the message it publishes, with the job's
        snapshot (`cronhive.snapshots`)."""
        now = self.clock.now()
        slot = slot or now
        run_id = new_run_id(slot)
        job = self.store.get_job(job_id)
        lease = self.store.claim_lease(LeaseScope.JOB, job_id, reservation_holder(run_id), LEASE_S, now,
                                       run_id=run_id)
        assert lease is not None, f"the lease of {job_id} is held"
        self.store.insert_run(new_run(job, run_id, Trigger.SCHEDULE, slot, now, lease))
        self.store.mark_run_queued(run_id, now)
        snapshot = snapshot_for(job, Trigger.SCHEDULE, slot, lease.token, lease.expires_at)
        assert snapshot is not None
        return run_id, run_message(self.settings.runs_queue, run_id, job_id, snapshot)

    def run(self, run_id: str) -> dict[str, Any]:
        """The run's document as stored."""
        doc = self.store.runs.find_one({"_id": run_id})
        assert doc is not None, run_id
        return doc

    def job_doc(self, job_id: str) -> dict[str, Any]:
        """The job's document as stored."""
        doc = self.store.jobs.find_one({"_id": job_id})
        assert doc is not None, job_id
        return doc


@pytest.fixture
def harness(settings: Settings, store: MongoStore) -> Iterator[Harness]:
    settings = settings.replace(job_lease_s=LEASE_S, retry_backoff_ms=1000, run_history_limit=1000)
    clock = FakeClock(utcnow())
    keeper = LeaseKeeper(store, clock, LEASE_S)  # not started: tests call renew_all themselves
    lifecycle = RunLifecycle(store, clock, settings, keeper, worker="testhost:4242")
    yield Harness(store, settings, clock, RecordingBroker(), RecordingPublisher(), keeper, lifecycle)
