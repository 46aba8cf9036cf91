"""Helpers for the scheduler tests: a hand-moved clock, a dispatcher on the real store and
RabbitMQ, and the run messages read straight from the test's queue."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from cronhive.broker import Published, RunPublisher
from cronhive.domain import utcnow
from cronhive.errors import BrokerUnavailable
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.scheduler.leadership import LeadershipLost
from cronhive.settings import Settings
from cronhive.snapshots import JobSnapshot
from cronhive.store import MongoStore
from tests import services


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.instant = now

    def now(self) -> datetime:
        return self.instant

    def set(self, instant: datetime) -> None:
        self.instant = instant

    def advance(self, seconds: float) -> None:
        self.instant += timedelta(seconds=seconds)


class Term:
    """A guard for the dispatcher: a fixed term, revocable (as a lost leadership)."""

    def __init__(self, term: int) -> None:
        self.term = term
        self.valid = True
        self.calls = 0

    def __call__(self, now: datetime) -> int:
        self.calls += 1
        if not self.valid:
            raise LeadershipLost(f"term {self.term} is over")
        return self.term


class FlakyPublisher:
    """Wraps the real publisher; ``down`` makes it fail like an unreachable RabbitMQ.
    Records, at each publish, the run's status as stored (to prove pending-before-confirm)."""

    def __init__(self, real: RunPublisher, store: MongoStore) -> None:
        self.real = real
        self.store = store
        self.url = real.url
        self.down = False
        self.seen_status: list[tuple[str, str]] = []
        #: the job snapshots the runs were published with, by run id
        self.snapshots: dict[str, JobSnapshot] = {}
        #: the runs published marked behind an older slot run (`cronhive.broker.BEHIND_OPTION`)
        self.behind: set[str] = set()

    def publish_run(self, run_id: str, job_id: str) -> None:
        self.seen_status.append((run_id, self.store.get_run(run_id).status))
        if self.down:
            raise BrokerUnavailable(f"RabbitMQ is unreachable at {self.url}: test")
        self.real.publish_run(run_id, job_id)

    def publish_runs(self, runs: Sequence[tuple[str, str]], *, snapshots: Mapping[str, JobSnapshot] | None = None,
                     behind: Collection[str] = ()) -> Published:
        self.seen_status.extend((run_id, self.store.get_run(run_id).status) for run_id, _ in runs)
        self.snapshots.update(snapshots or {})
        self.behind.update(behind)
        if self.down:
            return Published([], BrokerUnavailable(f"RabbitMQ is unreachable at {self.url}: test"))
        return self.real.publish_runs(runs, snapshots=snapshots, behind=behind)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utcnow())


@pytest.fixture
def flaky(publisher: RunPublisher, store: MongoStore) -> FlakyPublisher:
    return FlakyPublisher(publisher, store)


@pytest.fixture
def make_dispatcher(store: MongoStore, flaky: FlakyPublisher, clock: FakeClock,
                    settings: Settings) -> Callable[..., Dispatcher]:
    def make(term: int = 1, *, batch: int = 200, job_lease_s: float = 30.0, publisher: Any = None,
             publish_chunk: int = 500, lookahead_s: float = 0.0, mark_delay_s: float = 0.0) -> Dispatcher:
        # marks at once unless a test says otherwise: what it checks is which runs get marked
        dispatcher = Dispatcher(store, publisher or flaky, clock, Term(term), job_lease_s=job_lease_s, batch=batch,
                                publish_chunk=publish_chunk, lookahead_s=lookahead_s, mark_delay_s=mark_delay_s)
        return dispatcher

    return make


@pytest.fixture
def messages(settings: Settings, publisher: RunPublisher) -> Callable[[], list[dict[str, Any]]]:
    """Take every run message now on the test's queue, decoded, in queue order."""
    publisher.ping()  # declare the queue as dramatiq does, so an empty one can be read

    def take() -> list[dict[str, Any]]:
        return [json.loads(body) for body in services.get_messages(settings.rabbitmq_url, settings.runs_queue)]

    return take


def create_job(store: MongoStore, job_id: str, schedule: str = "* * * * * *", at: datetime | None = None,
               **fields: Any) -> dict[str, Any]:
    """Create a job through the store; its document as stored."""
    store.create_job({"name": job_id, "job_id": job_id, "schedule": schedule, "handler": "noop", **fields},
                     at or utcnow())
    doc = store.jobs.find_one({"_id": job_id})
    assert doc is not None
    return doc
