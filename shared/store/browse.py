"""Browsing the jobs by position (keyset pages), for the dashboard's jobs table.

The API's ``GET /jobs`` pages by number (the seed's contract: ``page``, ``limit``,
``total``): MongoDB must skip every job before the page, and the total counts every
match. The dashboard pages by position instead — "the ``limit`` jobs after (or
before) this one" in the same order (creation, then id) — so a page costs what it
lists, however deep it is and however many jobs the store holds:

* the page is read in windows of creation time (index "created_order"), the first
  one second wide, each next one twice (eight times after an empty one) as wide,
  until the page is full or the newest job is passed; the last window is
  open-ended, so nothing is ever missed; at most `MAX_WINDOWS` reads are sent (the
  oldest and newest creation instants are remembered by the process and checked
  with two reads of the index beyond them);
* ties (jobs created in the same millisecond as the position) are read first by an
  equality-and-range read on the same index.

A window bounds what the server reads, not only what it returns: a server that
fetches every candidate of a sorted find before applying its limit (SecantusDB
does) then reads about one page, not the whole collection.

A text search (substring of the name or id, case-insensitive) cannot use an index:
it is one read of the matching jobs after the position, one more than the page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, DESCENDING

from cronhive.domain import Job
from cronhive.enums import JobStatus
from cronhive.store.base import Document, StoreBase, translated
from cronhive.store.documents import job_from_doc, job_status_filter

FIRST_WINDOW = timedelta(seconds=1)
#: Reads of one page at most (ties included); the last one is open-ended.
MAX_WINDOWS = 24
#: A window reaching this far past ``now`` is the last one (creation times are the
#: server's clock at creation: a replica's clock may be a little behind another's).
CLOCK_MARGIN = timedelta(minutes=5)
MAX_SEARCH_LENGTH = 200
_ORDER = [("created_at", ASCENDING), ("_id", ASCENDING)]
_REVERSED = [("created_at", DESCENDING), ("_id", DESCENDING)]
#: Before every creation instant (a range from it skips jobs without one).
_DAWN = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class JobPosition:
    """A job's place in the listing order: its creation instant, then its id."""

    #: None for a job written without one (they come first).
    created_at: datetime | None
    job_id: str

    @classmethod
    def of(cls, job: Job) -> JobPosition:
        return cls(job.created_at, job.job_id)

    def token(self) -> str:
        """The position in a URL: milliseconds since the epoch (``n`` for none), a dot, the job id."""
        millis = "n" if self.created_at is None else str(int(self.created_at.timestamp() * 1000))
        return f"{millis}.{self.job_id}"

    @classmethod
    def parse(cls, token: str | None) -> JobPosition | None:
        """The position a `token` names, or None for a missing or malformed one."""
        millis, dot, job_id = (token or "").partition(".")
        if not dot or not job_id or len(job_id) > 200:
            return None
        if millis == "n":
            return cls(None, job_id)
        if not millis.isdigit() or len(millis) > 15:
            return None
        return cls(datetime.fromtimestamp(int(millis) / 1000, UTC), job_id)


@dataclass(frozen=True)
class JobsPage:
    jobs: list[Job]
    #: ``before`` for the page before this one: its first job (None on the first page).
    previous: JobPosition | None
    #: ``after`` for the page after this one: its last job (None on the last page).
    next: JobPosition | None


def _after(position: JobPosition) -> Document:
    """Jobs after ``position`` in the listing order (jobs without a creation instant first)."""
    if position.created_at is None:
        return {"$or": [{"created_at": None, "_id": {"$gt": position.job_id}}, {"created_at": {"$gte": _DAWN}}]}
    return {"$or": [{"created_at": {"$gt": position.created_at}},
                    {"created_at": position.created_at, "_id": {"$gt": position.job_id}}]}


def _before(position: JobPosition) -> Document:
    """Jobs before ``position`` in the listing order."""
    if position.created_at is None:
        return {"created_at": None, "_id": {"$lt": position.job_id}}
    return {"$or": [{"created_at": {"$lt": position.created_at}}, {"created_at": None},
                    {"created_at": position.created_at, "_id": {"$lt": position.job_id}}]}


Keep = Callable[[Job], bool]


def _completed(job: Job) -> bool:
    return job.completed


def _not_completed(job: Job) -> bool:
    return not job.completed


def jobs_filter(status: JobStatus | None, handler: str | None) -> Document:
    """The query of the ``status`` and ``handler`` filters, shared by every listing."""
    query: Document = job_status_filter(status) if status is not None else {}
    if handler is not None:
        query["handler"] = handler
    return query


class JobBrowsing(StoreBase):
    """Keyset pages of the ``jobs`` collection (see the module doc)."""

    _known_bounds: tuple[datetime, datetime] | None = None

    @translated
    def browse_jobs(self, limit: int, now: datetime, *, after: JobPosition | None = None,
                    before: JobPosition | None = None, status: JobStatus | None = None,
                    handler: str | None = None, text: str | None = None) -> JobsPage:
        """``limit`` jobs after ``after`` (or before ``before``; else the first ones),
        in creation order then id, matching the filters and the search ``text``."""
        query, keep = jobs_filter(status, handler), None
        text = (text or "").strip()[:MAX_SEARCH_LENGTH]
        if text:
            pattern = re.escape(text)
            matches = {"$or": [{"name": {"$regex": pattern, "$options": "i"}},
                               {"_id": {"$regex": pattern, "$options": "i"}}]}
            query = {"$and": [query, matches]} if query else matches  # the status filter may hold an $or
        elif status in (JobStatus.ACTIVE, JobStatus.COMPLETED):
            # completed = enabled, bounded, never due again: the index reads the enabled jobs of
            # each window (an $or would be a collection scan per window), the job decides
            query = {"enabled": True, **({"handler": handler} if handler is not None else {})}
            keep = _completed if status == JobStatus.COMPLETED else _not_completed
        if before is not None:
            found = self._read_backward(query, before, limit + 1, bool(text), keep)
            if len(found) > limit:  # else the page reaches the first job: it IS the first page
                page = list(reversed(found[:limit]))
                return JobsPage(page, JobPosition.of(page[0]), JobPosition.of(page[-1]))
            after = None
        found = self._read_forward(query, after, limit + 1, now, bool(text), keep)
        if after is not None and not found:  # past the last job (it was deleted): the first page
            after, found = None, self._read_forward(query, None, limit + 1, now, bool(text), keep)
        page = found[:limit]
        return JobsPage(page, JobPosition.of(page[0]) if after is not None else None,
                        JobPosition.of(page[-1]) if len(found) > limit else None)

    def _read_forward(self, query: Document, after: JobPosition | None, wanted: int, now: datetime,
                      one_read: bool, keep: Keep | None = None) -> list[Job]:
        if one_read:
            return self._read({"$and": [query, _after(after)]} if after else query, _ORDER, wanted)
        if after is None:  # jobs without a creation instant (written by hand) sort first
            found = self._read({"created_at": None, **query}, _ORDER, wanted, keep)
        else:
            found = self._read({"created_at": after.created_at, "_id": {"$gt": after.job_id}, **query}, _ORDER, wanted,
                               keep)
        bounds = self._bounds()
        if bounds is None:
            return found
        oldest, newest = bounds
        lower = oldest - timedelta(milliseconds=1)
        if after is not None and after.created_at is not None:
            lower = after.created_at
        return found + self._read_windows(query, lower, newest, wanted - len(found), forward=True, keep=keep)

    def _read_backward(self, query: Document, before: JobPosition, wanted: int, one_read: bool,
                       keep: Keep | None = None) -> list[Job]:
        if one_read:
            return self._read({"$and": [query, _before(before)]}, _REVERSED, wanted)
        found = self._read({"created_at": before.created_at, "_id": {"$lt": before.job_id}, **query}, _REVERSED,
                           wanted, keep)
        if before.created_at is None:
            return found
        bounds = self._bounds()
        oldest = bounds[0] if bounds is not None else before.created_at
        found += self._read_windows(query, before.created_at, oldest, wanted - len(found), forward=False,
                                    keep=keep)
        if len(found) < wanted:  # jobs without a creation instant come first
            found.extend(self._read({"created_at": None, **query}, _REVERSED, wanted - len(found), keep))
        return found

    def _read_windows(self, query: Document, edge: datetime, last: datetime, wanted: int, *,
                      forward: bool, keep: Keep | None = None) -> list[Job]:
        """Up to ``wanted`` jobs past ``edge`` (after it, or before it when not ``forward``), read in
        widening windows; the window reaching ``last`` (the newest or the oldest creation
        instant) is open-ended."""
        found: list[Job] = []
        width = FIRST_WINDOW
        for window in range(MAX_WINDOWS - 4):
            if len(found) >= wanted or (edge >= last if forward else edge <= last):
                break
            far = edge + width if forward else edge - width
            open_ended = (far >= last if forward else far <= last) or window == MAX_WINDOWS - 5
            if forward:
                span = {"$gt": edge} if open_ended else {"$gt": edge, "$lte": far}
            else:
                span = {"$lt": edge} if open_ended else {"$gte": far, "$lt": edge}
            read = self._read({"created_at": span, **query}, _ORDER if forward else _REVERSED, wanted - len(found),
                              keep)
            found.extend(read)
            if open_ended:
                break
            edge, width = far, width * (2 if read else 8)
        return found

    def _read(self, query: Document, order: list[tuple[str, int]], limit: int, keep: Keep | None = None) -> list[Job]:
        """Up to ``limit`` jobs of ``query`` in ``order`` — those ``keep`` keeps, when given (it
        then reads the whole range: the windows bound it)."""
        if keep is None:
            return [job_from_doc(doc) for doc in self.jobs.find(query).sort(order).limit(limit)]
        return [job for job in map(job_from_doc, self.jobs.find(query).sort(order)) if keep(job)][:limit]

    def _bounds(self) -> tuple[datetime, datetime] | None:
        """The creation instants of the oldest and the newest job (None: no job has one).

        Remembered by the process: each call checks with two reads of the index beyond
        them (cheap: they hold only what was created, or restored, since) and moves the
        bounds out to what they find. A deleted oldest or newest job leaves its bound
        in place: still a bound, the windows past it are merely empty."""
        known = self._known_bounds
        if known is None:
            rows = list(self.jobs.aggregate([
                {"$match": {"created_at": {"$gte": _DAWN}}},
                {"$group": {"_id": None, "oldest": {"$min": "$created_at"}, "newest": {"$max": "$created_at"}}}]))
            if not rows:
                return None
            known = (rows[0]["oldest"], rows[0]["newest"])
        else:
            known = (self._instant({"$gte": _DAWN, "$lt": known[0]}, _ORDER) or known[0],
                     self._instant({"$gt": known[1]}, _REVERSED) or known[1])
        self._known_bounds = known
        return known

    def _instant(self, span: Document, order: list[tuple[str, int]]) -> datetime | None:
        """The first creation instant in ``span`` in ``order``."""
        for doc in self.jobs.find({"created_at": span}, {"created_at": 1}).sort(order).limit(1):
            instant: datetime = doc["created_at"]
            return instant
        return None
