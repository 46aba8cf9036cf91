"""Backfill runs whose publish failed stay ``pending``; the leader's backlog pass
publishes them oldest first (like a manual run, once `MANUAL_PENDING_S` old), so
a backfill that answered 503 loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cronhive.backfill import backfill_job
from cronhive.enums import Reprocess
from cronhive.errors import BrokerUnavailable
from cronhive.scheduler.dispatcher import MANUAL_PENDING_S, Dispatcher
from cronhive.store import MongoStore
from tests.scheduler.conftest import FakeClock, FlakyPublisher, create_job

Messages = Callable[[], list[dict[str, Any]]]


def test_pending_backfill_runs_are_published_by_the_backlog_pass_oldest_first(
        store: MongoStore, make_dispatcher: Callable[..., Dispatcher], clock: FakeClock, flaky: FlakyPublisher,
        messages: Messages) -> None:
    create_job(store, "bf", schedule="0 6 * * *", enabled=False, at=clock.now())
    flaky.down = True
    start = datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(BrokerUnavailable):
        backfill_job(store, flaky, "bf", start, start + timedelta(days=5), Reprocess.MISSING, clock.now())
    runs = list(store.runs.find({"job_id": "bf"}).sort("scheduled_for", 1))
    assert len(runs) == 5 and {run["status"] for run in runs} == {"pending"}
    flaky.down = False

    dispatcher = make_dispatcher()
    dispatcher.run_pass()
    assert messages() == []  # young: the API may still be publishing them
    clock.advance(MANUAL_PENDING_S + 1)
    dispatcher.backlog = True  # what BACKLOG_SCAN_S does in a running scheduler
    dispatcher.run_pass()
    assert [message["args"][0] for message in messages()] == [run["_id"] for run in runs]
    assert {run["status"] for run in store.runs.find({"job_id": "bf"})} == {"queued"}
