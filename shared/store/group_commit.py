"""Group commit: the single-document writes of a process's threads, batched into
one command.

A worker thread makes a few single-document writes per run (its claim, its start,
its outcome, its job's outcome). On the store a round trip — and, with
``--sync-on-commit``, a sync to disk — costs far more than the document it writes,
so a `GroupCommit` collects the writes that threads submit while one batch is in
flight and sends them as the next unordered ``bulk_write``: whoever submits into an
idle committer writes at once (no added wait when the process is idle), and under
load batches form by themselves, each caller learning its own result.

Compare-and-set in a batch
    A bulk write reports one modified count for all its updates, not which of them
    applied. Each `Cas` carries a *proof*: a predicate that holds of the document
    after its update applied and of no other state it can reach — it names the
    unique values the update writes (a lease's new holder and token, an attempt's
    number and token). When the batch modified as many documents as it has updates
    (the common case) every one applied; otherwise the batch's documents are read
    back (a ``find`` by ``_id`` per `cronhive.store.base.ID_CHUNK`) and each update's
    proof says whether it applied
    (`Outcome.APPLIED`), did not (`Outcome.CONFLICT`: the expectation no longer
    held), or found no document (`Outcome.MISSING`). Nothing is upserted, so readers
    never see a write that did not apply. A write applied and then overwritten by
    someone else before the read-back reads as `CONFLICT`: callers treat a conflict
    as "not known to have applied" and fall back to reading the document.

One statement for many documents
    On the embedded store each update of a ``bulk_write`` is its own statement: its
    own transaction and sync to disk, its own read of the collection's index catalog,
    its own plan — most of what an update of a run or a job costs there. So the
    compare-and-sets of a batch that have the same *shape* (the same paths expected,
    each compared the same way, and the same fields written: `Cas.shape`) go as one
    ``UpdateMany`` by ``_id`` whose update is a pipeline (`pipelined`): it takes each
    document's own expected values and new values from lists indexed by its ``_id``,
    and rewrites a document only where its own expectation holds. That is the same
    predicate and the same update per document (`Cas.shape` accepts only the
    conditions and operators it translates exactly), in one statement; so a batch
    counts its documents *modified*, not matched (a pipelined update matches every
    document it names). The leader's job advances are written the same way
    (`statements`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pymongo import InsertOne, UpdateMany, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, WriteError

from cronhive.store.base import DUPLICATE_KEY, ID_CHUNK, Document, by_id, find_by_ids, id_chunks

#: Largest batch in one command (MongoDB accepts up to 100,000 operations).
MAX_BATCH = 1000


class Outcome(StrEnum):
    APPLIED = "applied"
    #: the expectation no longer held (or the insert's id was taken)
    CONFLICT = "conflict"
    #: the document of the compare-and-set does not exist
    MISSING = "missing"


Proof = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Cas:
    """A compare-and-set of the document ``doc_id``: ``update`` applies only while
    ``expected`` (a filter: dotted paths and operators allowed) holds; ``proof`` holds
    of the document once it applied (see the module docstring)."""

    doc_id: Any
    expected: Mapping[str, Any]
    update: Mapping[str, Any]
    proof: Proof

    def operation(self) -> UpdateOne:
        return UpdateOne(by_id(self.doc_id, self.expected), dict(self.update))

    @functools.cached_property
    def shape(self) -> Shape | None:
        """What a pipelined update of several compare-and-sets must share with this one
        (`pipelined`), or None when it is not written that way: an expectation other than
        a scalar's equality, null (null or missing), ``$in`` of scalars or ``$not`` ``$gt``
        a number, or an update with an operator other than ``$set``, ``$unset``, ``$max``
        and ``$push`` (of a value, or ``$each`` with a negative ``$slice``), or a dotted
        or ``$`` path it writes."""
        conditions: list[tuple[str, str]] = []
        for path, condition in self.expected.items():
            kind = _condition_kind(condition)
            if kind is None or path.startswith("$"):
                return None
            conditions.append((path, kind))
        writes: list[tuple[str, str, int | None]] = []
        if not isinstance(self.update, Mapping):
            return None
        for operator, fields in self.update.items():
            if operator not in _WRITES or not isinstance(fields, Mapping):
                return None
            for path, value in fields.items():
                if not _plain_field(path):
                    return None
                slice_ = None
                if operator == "$push" and isinstance(value, Mapping):
                    slice_ = _each_slice(value)
                    if slice_ is None:
                        return None
                writes.append((path, operator, slice_))
        paths = [path for path, _, _ in writes]
        if len(set(paths)) != len(paths):
            return None
        return tuple(sorted(conditions)), tuple(sorted(writes, key=lambda write: (write[0], write[1], write[2] or 0)))

    def new_value(self, path: str, operator: str) -> Any:
        """What this compare-and-set writes at ``path`` with ``operator`` (for `pipelined`):
        the ``$set`` value, or the list of values a ``$push`` appends."""
        value = self.update[operator][path]
        if operator == "$push":
            return list(value["$each"]) if isinstance(value, Mapping) else [value]
        return value


#: (the expected paths with how each is compared, the written paths with their operator
#: and a ``$push``'s ``$slice``): compare-and-sets of one shape share a pipelined update
Shape = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, int | None], ...]]

_WRITES = ("$set", "$unset", "$push", "$max")
_SCALARS = (str, int, float, datetime)
#: the pipeline's working fields (removed by its last stage)
_INDEX, _HOLDS = "__cas_index", "__cas_holds"


def _condition_kind(condition: Any) -> str | None:
    """How `pipelined` compares an expectation: ``eq`` (a scalar), ``null`` (null or
    missing), ``in`` (``{"$in": [scalars or null]}``), ``not_gt`` (``{"$not": {"$gt":
    number}}``); None: not translated."""
    if condition is None:
        return "null"
    if isinstance(condition, _SCALARS):  # bool is an int
        return "eq"
    if isinstance(condition, Mapping) and set(condition) == {"$in"} and isinstance(condition["$in"], list | tuple) \
            and all(item is None or isinstance(item, _SCALARS) for item in condition["$in"]):
        return "in"
    if isinstance(condition, Mapping) and set(condition) == {"$not"} and isinstance(condition["$not"], Mapping) \
            and set(condition["$not"]) == {"$gt"} and _number(condition["$not"]["$gt"]):
        return "not_gt"  # a leader's fencing: no newer term wrote it
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain_field(path: Any) -> bool:
    return isinstance(path, str) and bool(path) and "." not in path and not path.startswith("$") and path != "_id"


def _each_slice(value: Mapping[str, Any]) -> int | None:
    """The ``$slice`` of a ``{"$each": [...], "$slice": -n}`` push (0: none); None for
    any other modifier."""
    if "$each" not in value or not isinstance(value["$each"], list | tuple) or not set(value) <= {"$each", "$slice"}:
        return None
    slice_ = value.get("$slice", 0)
    return slice_ if isinstance(slice_, int) and not isinstance(slice_, bool) and slice_ <= 0 else None


def _picked(values: list[Any]) -> Document:
    """The document's own entry of ``values`` (listed in the order of the ids)."""
    return {"$arrayElemAt": [{"$literal": values}, f"${_INDEX}"]}


def _holds(path: str, kind: str, expected: Document) -> Document:
    """The aggregation expression for the query condition ``{path: expected}`` of
    ``kind`` — query semantics, including a value's match of an array holding it and
    null's match of a missing field."""
    ref = f"${path}"

    def held_by_array(value: Any) -> Document:
        return {"$and": [{"$isArray": ref}, {"$in": [value, ref]}]}

    if kind == "eq":
        return {"$or": [{"$eq": [ref, expected]}, held_by_array(expected)]}
    if kind == "null":
        return {"$or": [{"$eq": [{"$ifNull": [ref, None]}, None]}, held_by_array(None)]}
    if kind == "not_gt":  # a number above it, or an array holding one, does not match
        above = {"$and": [{"$isNumber": "$$item"}, {"$gt": ["$$item", expected]}]}
        return {"$not": [{"$or": [
            {"$and": [{"$isNumber": ref}, {"$gt": [ref, expected]}]},
            {"$and": [{"$isArray": ref},
                      {"$gt": [{"$size": {"$filter": {"input": ref, "as": "item", "cond": above}}}, 0]}]}]}]}
    return {"$or": [{"$in": [{"$ifNull": [ref, None]}, expected]},
                    {"$and": [{"$isArray": ref}, {"$gt": [{"$size": {"$setIntersection": [ref, expected]}}, 0]}]}]}


def pipelined(writes: Sequence[Cas]) -> UpdateMany:
    """Compare-and-sets of one `Cas.shape` on distinct documents as one ``UpdateMany``:
    ``_id`` among theirs, and a pipeline that finds each document's own entry in the
    lists of expected and new values (by its ``_id``), decides whether its expectation
    holds, and only then writes its values (otherwise every field is written back as it
    was, so the document is not modified)."""
    shape = writes[0].shape
    assert shape is not None and all(write.shape == shape for write in writes)
    conditions, fields = shape
    ids = [write.doc_id for write in writes]
    assert len(set(ids)) == len(ids)
    holds_all = {"$and": [
        _holds(path, kind, _picked([_expected_value(write.expected[path], kind) for write in writes]))
        for path, kind in conditions]}
    written: Document = {}
    for path, operator, slice_ in fields:
        field = f"${path}"
        if operator == "$unset":
            written[path] = {"$cond": [f"${_HOLDS}", "$$REMOVE", field]}
            continue
        value = _picked([write.new_value(path, operator) for write in writes])
        if operator == "$max":  # as the operator: the larger in BSON order, the value where none
            value = {"$max": [field, value]}
        elif operator == "$push":
            value = {"$concatArrays": [{"$ifNull": [field, []]}, value]}
            if slice_:
                value = {"$slice": [value, slice_]}
        written[path] = {"$cond": [f"${_HOLDS}", value, field]}
    pipeline: list[Document] = [{"$set": {_INDEX: {"$indexOfArray": [{"$literal": ids}, "$_id"]}}},
                                 {"$set": {_HOLDS: holds_all}},
                                 {"$set": written},
                                 {"$unset": [_INDEX, _HOLDS]}]
    return UpdateMany({"_id": {"$in": ids}}, pipeline)


def _expected_value(condition: Any, kind: str) -> Any:
    if kind == "in":
        return list(condition["$in"])
    return condition["$not"]["$gt"] if kind == "not_gt" else condition


def cas(doc_id: Any, expected: Mapping[str, Any], update: Mapping[str, Any], proof: Proof) -> Cas:
    return Cas(doc_id, expected, update, proof)


def holds(values: Mapping[str, Any]) -> Proof:
    """A proof that the document has these values (dotted paths) — those the update wrote."""

    def proof(doc: Mapping[str, Any]) -> bool:
        return all(value_at(doc, path) == value for path, value in values.items())

    return proof


def value_at(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


Write = Cas | InsertOne[Any]
#: what one batch's ``bulk_write`` is made of
Statement = InsertOne[Any] | UpdateOne | UpdateMany


@dataclass
class _Pending:
    write: Write
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    error: BaseException | None = None


class GroupCommit:
    """Batches the writes submitted by many threads into one ``bulk_write`` each."""

    def __init__(self, collection: Collection[Any], *, max_batch: int = MAX_BATCH) -> None:
        self.collection = collection
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._flushing = False
        #: commands sent (batches and read-backs), batches, and writes made
        self.commands = 0
        self.batches = 0
        self.operations = 0

    def submit(self, write: Write) -> Outcome:
        """Write ``write`` in the next batch; its outcome. Raises what the batch raised
        (pymongo's errors: the store's methods translate them, naming the store)."""
        return self.submit_many([write])[0]

    def submit_many(self, writes: Sequence[Write]) -> list[Outcome]:
        pending = [_Pending(write) for write in writes]
        with self._lock:
            self._queue.extend(pending)
            lead = not self._flushing
            if lead:
                self._flushing = True
        if lead:
            self._drain()
        for item in pending:
            item.done.wait()
        results: list[Outcome] = []
        for item in pending:
            if item.error is not None:
                raise item.error
            assert item.outcome is not None
            results.append(item.outcome)
        return results

    def _drain(self) -> None:
        """As the flusher: write batches until nothing is queued."""
        while True:
            with self._lock:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                if not batch:
                    self._flushing = False
                    return
            try:
                self._write(batch)
            except BaseException as exc:  # every caller of the batch sees the failure
                for item in batch:
                    item.error = exc
            for item in batch:
                item.done.set()

    def _write(self, batch: list[_Pending]) -> None:
        plan = [(op, [batch[position] for position in positions])
                for op, positions in statements([item.write for item in batch])]
        errors: list[dict[str, Any]] = []
        modified = 0
        try:
            modified = self.collection.bulk_write([op for op, _ in plan], ordered=False).modified_count
        except BulkWriteError as exc:
            errors = list(exc.details.get("writeErrors", []))
            modified = int(exc.details.get("nModified", 0))
        self.commands += 1
        self.batches += 1
        self.operations += len(batch)
        for item in batch:
            item.outcome = Outcome.APPLIED
        #: writes of a failed pipelined statement: it may have rewritten some of its
        #: documents before it failed, so the read-back tells which did apply
        failed: dict[int, WriteError] = {}
        for error in errors:
            items = plan[error["index"]][1]
            failure = WriteError(str(error.get("errmsg", "write error")), error.get("code"), dict(error))
            if len(items) > 1:
                failed.update((id(item), failure) for item in items)
                continue
            items[0].outcome = Outcome.CONFLICT
            if error.get("code") != DUPLICATE_KEY:
                items[0].error = failure
        updates = [item for item in batch if isinstance(item.write, Cas) and item.error is None]
        if modified < len(updates) or failed:
            self._verify(updates)
        for item in batch:
            if id(item) in failed and item.outcome is not Outcome.APPLIED:
                item.error = failed[id(item)]

    def _verify(self, updates: list[_Pending]) -> None:
        """Some compare-and-set did not modify its document: read the documents back;
        each proof tells."""
        ids = list({item.write.doc_id for item in updates if isinstance(item.write, Cas)})
        docs = {doc["_id"]: doc for doc in find_by_ids(self.collection, ids)}
        self.commands += len(list(id_chunks(ids)))
        for item in updates:
            assert isinstance(item.write, Cas)
            doc = docs.get(item.write.doc_id)
            if doc is None:
                item.outcome = Outcome.MISSING
            elif not item.write.proof(doc):
                item.outcome = Outcome.CONFLICT


def statements(writes: Sequence[Write]) -> list[tuple[Statement, list[int]]]:
    """The statements of one ``bulk_write`` of ``writes``, each with the positions of the
    writes it carries: compare-and-sets of one `Cas.shape` on distinct documents, two or
    more, as `pipelined` updates of up to `cronhive.store.base.ID_CHUNK` documents;
    every other write as its own statement."""
    planned: list[tuple[Statement, list[int]]] = []
    groups: dict[Shape, list[_Chunk]] = {}
    for position, write in enumerate(writes):
        if not isinstance(write, Cas):
            planned.append((write, [position]))
            continue
        shape = write.shape
        if shape is None:
            planned.append((write.operation(), [position]))
            continue
        chunks = groups.setdefault(shape, [])
        chunk = next((c for c in chunks if len(c.writes) < ID_CHUNK and write.doc_id not in c.ids), None)
        if chunk is None:
            chunk = _Chunk()
            chunks.append(chunk)
        chunk.add(position, write)
    for chunks in groups.values():
        for chunk in chunks:
            cases = chunk.writes
            planned.append((cases[0].operation() if len(cases) == 1 else pipelined(cases), chunk.positions))
    return planned


@dataclass
class _Chunk:
    """Compare-and-sets of one shape on distinct documents, bound for one statement."""

    positions: list[int] = field(default_factory=list)
    writes: list[Cas] = field(default_factory=list)
    ids: set[Any] = field(default_factory=set)

    def add(self, position: int, write: Cas) -> None:
        self.positions.append(position)
        self.writes.append(write)
        self.ids.add(write.doc_id)


_COMMITTERS_LOCK = threading.Lock()
#: where a client carries its collections' committers (they live and go with it)
_ON_CLIENT = "_cronhive_group_commits"


def committer(collection: Collection[Document]) -> GroupCommit:
    """The process's one `GroupCommit` for ``collection`` — shared by every thread and
    every store object using the same client, made on first use."""
    committers: dict[tuple[str, str], GroupCommit] = vars(collection.database.client).setdefault(_ON_CLIENT, {})
    key = (collection.database.name, collection.name)
    found = committers.get(key)
    if found is not None:
        return found
    with _COMMITTERS_LOCK:
        return committers.setdefault(key, GroupCommit(collection))


def applied(collection: Collection[Document], write: Cas) -> bool:
    """Submit one compare-and-set to the committer of ``collection``: whether it applied."""
    return committer(collection).submit(write) is Outcome.APPLIED


def applied_each(collection: Collection[Document], writes: Sequence[Cas]) -> list[bool]:
    """Submit compare-and-sets (of distinct documents) to the committer of ``collection``
    as one batch: whether each applied."""
    return [outcome is Outcome.APPLIED for outcome in committer(collection).submit_many(writes)]


__all__ = ["Cas", "GroupCommit", "Outcome", "Shape", "applied", "applied_each", "cas", "committer", "holds", "pipelined",
           "statements", "value_at"]
