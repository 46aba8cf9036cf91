"""What every part of the store shares: the collections, and pymongo's connectivity
failures as `StoreUnavailable`.

Every public store method is wrapped by `translated`, so a process only ever sees
domain errors from the store: `StoreUnavailable` (503 in the API) when MongoDB
cannot be reached, `NotFound`/`Conflict` subclasses otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from pymongo import DeleteMany, MongoClient, UpdateMany
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


#: The most ids one ``{"_id": {"$in": [...]}}`` names. SecantusDB's cost for such a
#: filter grows with the square of the list's length (reading 1,000 jobs by id: 700 ms
#: in one ``find``, 77 ms 50 at a time; marking 1,000 runs: 2.2 s in one
#: ``update_many``, 0.8 s 50 at a time), MongoDB's with its length; longer lists are
#: split (`id_chunks`): reads into one ``find`` per chunk, writes into one operation
#: per chunk of a single ``bulk_write``.
ID_CHUNK = 50


def id_chunks(ids: Sequence[T]) -> Iterator[list[T]]:
    """``ids`` in lists of at most `ID_CHUNK`, in order."""
    for start in range(0, len(ids), ID_CHUNK):
        yield list(ids[start:start + ID_CHUNK])


def find_by_ids(coll: Collection[Document], ids: Sequence[Any], projection: Mapping[str, Any] | None = None,
                conditions: Mapping[str, Any] | None = None) -> Iterator[Document]:
    """The documents of ``coll`` among ``ids`` (that also match ``conditions``), read
    `ID_CHUNK` ids at a time."""
    for chunk in id_chunks(ids):
        yield from coll.find({"_id": {"$in": chunk}, **(conditions or {})}, projection)


def updates_by_ids(ids: Sequence[Any], conditions: Mapping[str, Any], update: Mapping[str, Any]) -> list[UpdateMany]:
    """``update`` of the documents among ``ids`` that match ``conditions``, as an
    ``UpdateMany`` per `ID_CHUNK` ids (for a ``bulk_write``)."""
    return [UpdateMany({"_id": {"$in": chunk}, **conditions}, dict(update)) for chunk in id_chunks(ids)]


def update_by_ids(coll: Collection[Document], ids: Sequence[Any], conditions: Mapping[str, Any],
                  update: Mapping[str, Any]) -> int:
    """Apply ``update`` to the documents among ``ids`` that match ``conditions``, in one
    ``bulk_write`` (`updates_by_ids`). How many it modified."""
    if not ids:
        return 0
    return coll.bulk_write(updates_by_ids(ids, conditions, update), ordered=False).modified_count


def delete_by_ids(coll: Collection[Document], ids: Sequence[Any], conditions: Mapping[str, Any]) -> int:
    """Delete the documents among ``ids`` that match ``conditions``, in one ``bulk_write``
    of a ``DeleteMany`` per `ID_CHUNK` ids. How many it deleted."""
    if not ids:
        return 0
    ops = [DeleteMany({"_id": {"$in": chunk}, **conditions}) for chunk in id_chunks(ids)]
    return coll.bulk_write(ops, ordered=False).deleted_count


def by_id(doc_id: Any, expected: Mapping[str, Any]) -> Document:
    """The filter of a compare-and-set on one document: ``_id`` is ``doc_id`` and
    ``expected`` (a filter: dotted paths and operators allowed) still holds.

    Each scalar ``v`` of ``expected`` but null is written ``{"$all": [v]}``, the same
    predicate in MongoDB (``$all`` is an ``$and`` of equalities, so of one value it is
    that value's equality, matching an array that holds it too). Nulls, arrays and
    subdocuments stay plain equalities: SecantusDB's ``$all`` neither matches a
    missing field for a null nor an array inside it, as MongoDB's does. The reason is
    the embedded store's planner: SecantusDB takes its ``_id`` point lookup only for
    ``_id`` alone, and for a filter of several equality or range fields first tries
    each of them against every index of the collection (about 40 % of an update's
    cost on ``runs`` and ``jobs``, with their 7-9 indexes). A ``$all`` condition is
    no index candidate there, so ``_id`` is what it plans on, as MongoDB does.
    Operator conditions (``$in``, ``$lt``, ...) stay as they are."""
    spelled: Document = {"_id": doc_id}
    for path, condition in expected.items():
        plain = condition is None or isinstance(condition, Mapping | list | tuple)
        spelled[path] = condition if plain else {"$all": [condition]}
    return spelled


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
