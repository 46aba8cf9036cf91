"""The slot ledger, ``GET /jobs/:id/slots``, against the real store with the real
dispatcher driven by the API's hand-moved clock: every slot the job's schedule —
as it was at the time — named, across a schedule change and a DST change (New
York's spring-forward), with a scheduler outage showing ``missed`` (and, once the
scheduler is back, ``coalesced``), ``pending`` within grace, ``skipped`` with why
(a maintenance window); at most 1,000 slots; and the dashboard's strip showing it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from cronhive.broker import RunPublisher
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.store import MongoStore
from tests.api.conftest import CANONICAL, FakeClock, create
from tests.scheduler.conftest import Term


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def dispatcher(store: MongoStore, publisher: RunPublisher, clock: FakeClock) -> Iterator[Dispatcher]:
    yield Dispatcher(store, publisher, clock, Term(1), job_lease_s=30.0, batch=200, mark_delay_s=0.0)


def slots(client: FlaskClient, job_id: str, **query: str) -> list[dict[str, Any]]:
    response = client.get(f"{CANONICAL}/jobs/{job_id}/slots", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def outcomes(client: FlaskClient, job_id: str, **query: str) -> list[tuple[str, str, str | None]]:
    return [(slot["scheduled_for"], slot["outcome"], slot["reason"]) for slot in slots(client, job_id, **query)]


def test_the_ledger_across_a_schedule_change_a_dst_change_and_an_outage(
        client: FlaskClient, clock: FakeClock, dispatcher: Dispatcher) -> None:
    clock.set(at("2026-03-06T12:00:00"))
    create(client, job_id="ny", schedule="30 2 * * *", timezone="America/New_York", overlap_policy="allow")
    for slot in ("2026-03-07T07:30:00", "2026-03-08T07:00:00", "2026-03-09T06:30:00"):  # 02:30, the gap: 03:00, 02:30
        clock.set(at(slot).replace(microsecond=500_000))
        assert dispatcher.run_pass().fired == 1
    clock.set(at("2026-03-09T17:00:00"))
    assert client.put(f"{CANONICAL}/jobs/ny", json={"schedule": "0 12 * * *"}).status_code == 200  # noon in New York
    clock.set(at("2026-03-10T16:00:00.500"))
    assert dispatcher.run_pass().fired == 1
    # the scheduler is down on 03-11 and comes back 30 s after the 03-12 slot
    clock.set(at("2026-03-12T16:00:30"))
    before = outcomes(client, "ny")
    assert before == [
        ("2026-03-07T07:30:00Z", "queued", None),
        ("2026-03-08T07:00:00Z", "queued", None),  # the spring-forward gap: the first instant after it
        ("2026-03-09T06:30:00Z", "queued", None),
        # not 2026-03-10T06:30Z: the old schedule was replaced; not the new one's noons before the change
        ("2026-03-10T16:00:00Z", "queued", None),
        ("2026-03-11T16:00:00Z", "missed", None),  # past due plus grace, no run: the scheduler was down
        ("2026-03-12T16:00:00Z", "pending", None),  # within its grace
    ]
    assert dispatcher.run_pass().fired == 1  # fire_once: the latest slot runs and stands for the one missed
    after = slots(client, "ny")
    caught_up = after[-1]["run_id"]
    assert [(s["scheduled_for"], s["outcome"], s["run_id"]) for s in after[-2:]] == [
        ("2026-03-11T16:00:00Z", "coalesced", caught_up), ("2026-03-12T16:00:00Z", "queued", caught_up)]
    # a maintenance window holds the next slot; the one after finds the scheduler away again
    window = client.post(f"{CANONICAL}/maintenance", json={"job_ids": ["ny"], "start": "2026-03-13T15:00:00Z",
                                                           "end": "2026-03-13T17:00:00Z"})
    assert window.status_code == 201
    clock.set(at("2026-03-13T16:00:00.500"))
    assert dispatcher.run_pass().skipped == 1
    clock.set(at("2026-03-14T16:02:00"))
    assert outcomes(client, "ny")[-2:] == [("2026-03-13T16:00:00Z", "skipped", "maintenance"),
                                           ("2026-03-14T16:00:00Z", "missed", None)]
    # a range: both ends inclusive
    assert [s[0] for s in outcomes(client, "ny", **{"from": "2026-03-08T07:00:00Z", "to": "2026-03-10T16:00:00Z"})] == [
        "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T16:00:00Z"]
    # the future: pending
    assert outcomes(client, "ny", **{"from": "2026-03-15T00:00:00Z", "to": "2026-03-16T23:00:00Z"}) == [
        ("2026-03-15T16:00:00Z", "pending", None), ("2026-03-16T16:00:00Z", "pending", None)]

    page = client.get("/ui/jobs/ny").get_data(as_text=True)
    strip = page.split('id="slot-strip"', 1)[1].split("</div>", 1)[0]
    assert 'class="slot missed"' in strip and 'title="skipped (maintenance)' in strip
    assert f'class="coalesced" href="/ui/runs/{caught_up}"' in strip
    assert strip.count('class="queued"') == 5


def test_the_ledger_refuses_more_than_1000_slots_and_bad_ranges(client: FlaskClient, clock: FakeClock) -> None:
    create(client, job_id="secondly", schedule="* * * * * *")
    clock.advance(hours=2)
    tooth = client.get(f"{CANONICAL}/jobs/secondly/slots",
                       query_string={"from": "2026-03-26T10:00:00Z", "to": "2026-03-26T11:00:00Z"})
    assert tooth.status_code == 422 and tooth.get_json()["error"]["code"] == "too_many_slots"
    fits = slots(client, "secondly", **{"from": "2026-03-26T10:00:01Z", "to": "2026-03-26T10:16:40Z"})
    assert len(fits) == 1000 and {s["outcome"] for s in fits} == {"missed"}  # no scheduler ran
    assert len(slots(client, "secondly")) == 100  # the default: the last 100 up to now
    backwards = client.get(f"{CANONICAL}/jobs/secondly/slots",
                           query_string={"from": "2026-03-26T11:00:00Z", "to": "2026-03-26T10:00:00Z"})
    assert backwards.status_code == 422 and "from" in backwards.get_json()["error"]["details"]
    assert client.get(f"{CANONICAL}/jobs/secondly/slots?from=yesterday").status_code == 400
    assert client.get(f"{CANONICAL}/jobs/nope/slots").status_code == 404
