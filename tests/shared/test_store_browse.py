"""cronhive.store.browse against the real MongoDB-wire server: keyset pages of the
jobs list walk every job exactly once, forwards and backwards, in the API's order
(creation, then id), whatever the spacing of the creation instants — the same
millisecond, seconds, years apart — with filters, search, jobs written without a
creation instant, a restore of older jobs, and bounded reads per page."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cronhive.enums import JobStatus
from cronhive.store import JobPosition, MongoStore
from cronhive.store.browse import MAX_WINDOWS
from tests.services import CommandCounter

NUMBERS = itertools.count()
T0 = datetime(2026, 3, 26, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=800)


def add_jobs(store: MongoStore, instants: list[datetime], **fields: Any) -> list[str]:
    ids = []
    for instant in instants:
        number = next(NUMBERS)
        body = {"name": f"Job {number} {instant:%Y%m%d%H%M%S%f}", "schedule": "0 8 * * *",
                "handler": "noop", **fields}
        ids.append(store.create_job(body, instant).job_id)
    return ids


def spread(rng: random.Random) -> list[datetime]:
    """Creation instants that defeat any one window size: bursts in one millisecond,
    seconds apart, and gaps of months."""
    instants = [T0] * 7 + [T0 + timedelta(milliseconds=1)] * 3
    instants += [T0 + timedelta(seconds=rng.uniform(1, 120)) for _ in range(25)]
    instants += [T0 + timedelta(days=rng.uniform(30, 700)) for _ in range(15)]
    instants += [T0 + timedelta(days=750, milliseconds=number) for number in range(20)]
    return instants


def walk_forward(store: MongoStore, limit: int, **filters: Any) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = store.browse_jobs(limit, NOW, after=after, **filters)
        pages.append([job.job_id for job in page.jobs])
        if page.next is None:
            return pages
        assert len(pages) < 1000
        after = page.next


def walk_backward(store: MongoStore, limit: int, last: JobPosition, **filters: Any) -> list[list[str]]:
    pages, before = [], last
    while before is not None:
        page = store.browse_jobs(limit, NOW, before=before, **filters)
        pages.append([job.job_id for job in page.jobs])
        before = page.previous
        assert len(pages) < 1000
    return pages


def assert_backward_covers(pages: list[list[str]], listing: list[str], limit: int) -> None:
    """Walking back from the last job of ``listing`` lists every job before it; each page
    is a run of the listing, and the walk ends on the (full) first page, which may overlap
    the one after it."""
    assert pages[-1] == listing[:limit]
    for page in pages:
        start = listing.index(page[0])
        assert page == listing[start:start + len(page)]
    later = [job for page in reversed(pages[:-1]) for job in page]
    assert later == listing[len(listing) - 1 - len(later):-1]
    assert {job for page in pages for job in page} | {listing[-1]} == set(listing)


def listed(store: MongoStore, **filters: Any) -> list[str]:
    jobs, _ = store.list_jobs(1, 100, **filters)
    return [job.job_id for job in jobs]


def test_pages_walk_every_job_once_in_the_listing_order_both_ways(store: MongoStore) -> None:
    add_jobs(store, spread(random.Random(3)))
    expected = listed(store)
    assert len(expected) == 70
    for limit in (1, 3, 7, 20, 100):
        pages = walk_forward(store, limit)
        assert [job for page in pages for job in page] == expected, limit
        assert all(len(page) == limit for page in pages[:-1])
        last = JobPosition.of(store.get_job(expected[-1]))
        assert_backward_covers(walk_backward(store, limit, last), expected, limit)


def test_previous_of_a_page_is_the_page_before_it(store: MongoStore) -> None:
    add_jobs(store, spread(random.Random(4)))
    first = store.browse_jobs(20, NOW)
    assert first.previous is None and first.next is not None
    second = store.browse_jobs(20, NOW, after=first.next)
    assert second.previous == JobPosition.of(second.jobs[0])
    again = store.browse_jobs(20, NOW, before=second.previous)
    assert [job.job_id for job in again.jobs] == [job.job_id for job in first.jobs]
    assert again.previous is None  # it reached the first job: it is the first page
    near_start = store.browse_jobs(20, NOW, before=JobPosition.of(first.jobs[5]))
    assert [job.job_id for job in near_start.jobs] == [job.job_id for job in first.jobs]


def test_filters_and_search_page_like_the_listing(store: MongoStore) -> None:
    rng = random.Random(5)
    for instant in spread(rng):
        add_jobs(store, [instant], handler=rng.choice(["noop", "sleep"]), enabled=rng.random() < 0.7)
    for filters in ({"status": JobStatus.ACTIVE}, {"status": JobStatus.DISABLED}, {"handler": "sleep"},
                    {"handler": "sleep", "status": JobStatus.DISABLED}, {"handler": "missing"}):
        expected = listed(store, **filters)
        assert [job for page in walk_forward(store, 4, **filters) for job in page] == expected, filters
    searched = [job for page in walk_forward(store, 3, text="job 1") for job in page]
    assert searched and all("job 1" in job.replace("_", " ") for job in searched)
    assert searched == [job for job in listed(store) if job in set(searched)]
    last = JobPosition.of(store.get_job(searched[-1]))
    assert_backward_covers(walk_backward(store, 3, last, text="job 1"), searched, 3)


def test_jobs_written_without_a_creation_instant_come_first(store: MongoStore) -> None:
    ids = add_jobs(store, [T0, T0 + timedelta(seconds=5)])
    store.jobs.insert_many([{**store.jobs.find_one({"_id": ids[0]}), "_id": name, "created_at": None}
                            for name in ("hand_b", "hand_a")])
    store.jobs.insert_one({**store.jobs.find_one({"_id": ids[0]}), "_id": "hand_c"})
    store.jobs.update_one({"_id": "hand_c"}, {"$unset": {"created_at": ""}})
    order = [job for page in walk_forward(store, 2) for job in page]
    assert order == ["hand_a", "hand_b", "hand_c", *ids]
    assert_backward_covers(walk_backward(store, 2, JobPosition.of(store.get_job(ids[-1]))), order, 2)
    assert JobPosition.parse(JobPosition(None, "hand_a").token()) == JobPosition(None, "hand_a")


def test_a_restored_older_job_and_new_jobs_are_seen_by_a_store_that_browsed_before(store: MongoStore) -> None:
    ids = add_jobs(store, [T0 + timedelta(days=10), T0 + timedelta(days=11)])
    assert [job.job_id for job in store.browse_jobs(10, NOW).jobs] == ids
    older = add_jobs(store, [T0 - timedelta(days=400)])
    newer = add_jobs(store, [NOW - timedelta(seconds=1)])
    assert [job.job_id for job in store.browse_jobs(10, NOW).jobs] == older + ids + newer


def test_a_position_past_the_last_job_shows_the_first_page(store: MongoStore) -> None:
    ids = add_jobs(store, [T0, T0 + timedelta(minutes=1)])
    gone = JobPosition(T0 + timedelta(days=5), "job_deleted")
    page = store.browse_jobs(10, NOW, after=gone)
    assert [job.job_id for job in page.jobs] == ids and page.previous is None


def test_positions_round_trip_through_their_token_and_bad_tokens_are_none() -> None:
    position = JobPosition(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "job.with.dots")
    assert JobPosition.parse(position.token()) == position
    for bad in (None, "", "x", "12", ".job", "abc.job", "1" * 16 + ".job", "-5.job", "12." + "j" * 201):
        assert JobPosition.parse(bad) is None, bad


@pytest.fixture
def counted(store: MongoStore) -> Iterator[tuple[MongoStore, CommandCounter]]:
    commands = CommandCounter()
    counting = MongoStore.open(store_settings(store), event_listeners=[commands])
    yield counting, commands
    counting.close()


def store_settings(store: MongoStore) -> Any:
    from cronhive.settings import Settings

    return Settings.from_env({"MONGODB_URI": store.uri, "MONGODB_DB": store.db.name})


def test_a_page_costs_a_bounded_number_of_reads_whatever_the_spacing(counted: tuple[MongoStore, CommandCounter],
                                                                     store: MongoStore) -> None:
    counting, commands = counted
    add_jobs(store, spread(random.Random(6)))
    counting.browse_jobs(20, NOW)  # the first browse of a process also finds the oldest job
    for filters in ({}, {"status": JobStatus.DISABLED}, {"handler": "missing"}):
        after = None
        while True:
            commands.take()
            page = counting.browse_jobs(5, NOW, after=after, **filters)
            sent = commands.take()
            assert len(sent) <= MAX_WINDOWS, (filters, sent)
            if page.next is None:
                break
            after = page.next
