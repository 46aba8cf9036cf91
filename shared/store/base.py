"""What every part of the store shares: the collections, and pymongo's connectivity
failures as `StoreUnavailable`.

Every public store method is wrapped by `translated`, so a process only ever sees
domain errors from the store: `StoreUnavailable` (503 in the API) when MongoDB
cannot be reached, `NotFound`/`Conflict` subclasses otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, ConnectionFailure, ServerSelectionTimeoutError

from cronhive.errors import StoreUnavailable
from cronhive.settings import redact_url

#: MongoDB's error code for a duplicate key.
DUPLICATE_KEY = 11000

P = ParamSpec("P")
T = TypeVar("T")

Document = dict[str, Any]

#: The collection of named leases (the leader's, the reaper's) and of scheduler heartbeats.
LEASES = "leases"
SCHEDULERS = "schedulers"


@contextmanager
def translate_errors(uri: str = "") -> Iterator[None]:
    """Turn pymongo's connectivity errors into `StoreUnavailable`."""
    try:
        yield
    except (ServerSelectionTimeoutError, ConnectionFailure) as exc:
        where = f" at {redact_url(uri)}" if uri else ""
        raise StoreUnavailable(f"MongoDB is unreachable{where}") from exc


def translated(method: Callable[P, T]) -> Callable[P, T]:
    """Wrap a store method in `translate_errors` (naming the store's redacted URI)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        self = args[0]
        with translate_errors(getattr(self, "uri", "")):
            return method(*args, **kwargs)

    return wrapper


class StoreBase:
    """The client, the database and its collections, shared by the store's parts."""

    def __init__(self, client: MongoClient[Document], db_name: str, *, owns_client: bool, uri: str = "") -> None:
        self.client = client
        self.db: Database[Document] = client[db_name]
        self.jobs: Collection[Document] = self.db["jobs"]
        self.runs: Collection[Document] = self.db["runs"]
        self.leases: Collection[Document] = self.db[LEASES]
        self.schedulers: Collection[Document] = self.db[SCHEDULERS]
        self.owns_client = owns_client
        self.uri = uri


def insert_new(collection: Collection[Document], docs: list[Document]) -> set[int]:
    """Insert ``docs`` in one unordered ``insert_many``; returns the indexes of those that
    were not inserted because their key exists (any other write error is raised)."""
    if not docs:
        return set()
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        return {error["index"] for error in errors}
    return set()
