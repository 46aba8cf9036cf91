"""`StoreOutages`: the grace a worker process gives expired attempts after MongoDB was
unreachable (pure: instants passed in)."""

from __future__ import annotations

from datetime import timedelta

from cronhive.domain import utcnow
from cronhive.worker.outages import StoreOutages


def test_no_outage_seen_holds_nothing() -> None:
    outages = StoreOutages(30)
    now = utcnow()
    assert outages.holding_until(now) is None
    assert outages.answered(now) is False  # an answer that ends no outage starts no grace
    assert outages.holding_until(now) is None


def test_expired_attempts_are_held_while_unreachable_and_for_a_lease_after_the_first_answer() -> None:
    outages = StoreOutages(30)
    start = utcnow()
    outages.unreachable()
    for later in (0, 10, 100):  # however long the outage: held a lease from each look
        at = start + timedelta(seconds=later)
        assert outages.holding_until(at) == at + timedelta(seconds=30)
    back = start + timedelta(seconds=120)
    assert outages.answered(back) is True
    assert outages.answered(back + timedelta(seconds=5)) is False  # the first answer starts the grace
    assert outages.holding_until(back + timedelta(seconds=29.9)) == back + timedelta(seconds=30)
    assert outages.holding_until(back + timedelta(seconds=30)) is None
    outages.unreachable()  # a new outage: a new grace after it
    assert outages.answered(back + timedelta(seconds=60)) is True
    assert outages.holding_until(back + timedelta(seconds=61)) == back + timedelta(seconds=90)

