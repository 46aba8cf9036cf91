"""Finding jobs by text, for the dashboard's jobs table.

Without search text this is exactly the API's listing (`MongoStore.list_jobs`:
creation order, ``status`` and ``handler`` filters, the total). With text it is
that same query and order plus a case-insensitive substring match on the job's
name or id; a text match cannot use an index, so it reads one more job than
the page to tell whether a next page exists instead of counting every match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING

from cronhive.domain import Job
from cronhive.enums import JobStatus
from cronhive.store import MongoStore, translate_errors
from cronhive.store.documents import job_from_doc, job_status_filter

MAX_SEARCH_LENGTH = 200


@dataclass(frozen=True)
class JobPage:
    docs: list[Job]
    page: int
    limit: int
    #: Jobs matching in all (None for a text search, which does not count them).
    total: int | None
    has_next: bool


def list_query(status: str | None, handler: str | None) -> dict[str, Any]:
    """The filter of `MongoStore.list_jobs` for ``status`` and ``handler``."""
    query: dict[str, Any] = {}
    if status is not None:
        query.update(job_status_filter(JobStatus(status)))
    if handler is not None:
        query["handler"] = handler
    return query


def find_jobs(store: MongoStore, page: int, limit: int, *, status: str | None = None, handler: str | None = None,
              text: str | None = None) -> JobPage:
    """One page of jobs in creation order (then id), filtered; see the module doc."""
    text = (text or "").strip()[:MAX_SEARCH_LENGTH]
    if not text:
        docs, total = store.list_jobs(page, limit, status=JobStatus(status) if status else None, handler=handler)
        return JobPage(docs, page, limit, total, page * limit < total)
    pattern = re.escape(text)
    matches = {"$or": [{"name": {"$regex": pattern, "$options": "i"}}, {"_id": {"$regex": pattern, "$options": "i"}}]}
    query = {"$and": [list_query(status, handler), matches]}  # the status filter may hold an $or of its own
    with translate_errors(store.uri):
        cursor = (store.jobs.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
                  .skip((page - 1) * limit).limit(limit + 1))
        docs = [job_from_doc(doc) for doc in cursor]
    return JobPage(docs[:limit], page, limit, None, len(docs) > limit)
