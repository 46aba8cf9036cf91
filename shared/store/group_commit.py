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
    A bulk write reports one matched count for all its updates, not which of them
    matched. Each `Cas` carries a *proof*: a predicate that holds of the document
    after its update applied and of no other state it can reach — it names the
    unique values the update writes (a lease's new holder and token, an attempt's
    number and token). When the batch matched as many documents as it has updates
    (the common case) every one applied; otherwise the batch's documents are read
    back in one ``find`` by ``_id`` and each update's proof says whether it applied
    (`Outcome.APPLIED`), did not (`Outcome.CONFLICT`: the expectation no longer
    held), or found no document (`Outcome.MISSING`). Nothing is upserted, so readers
    never see a write that did not apply. A write applied and then overwritten by
    someone else before the read-back reads as `CONFLICT`: callers treat a conflict
    as "not known to have applied" and fall back to reading the document.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, WriteError

from cronhive.store.base import DUPLICATE_KEY, Document, by_id, find_by_ids, id_chunks

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
        ops = [item.write.operation() if isinstance(item.write, Cas) else item.write for item in batch]
        errors: list[dict[str, Any]] = []
        matched = 0
        try:
            matched = self.collection.bulk_write(ops, ordered=False).matched_count
        except BulkWriteError as exc:
            errors = list(exc.details.get("writeErrors", []))
            matched = int(exc.details.get("nMatched", 0))
        self.commands += 1
        self.batches += 1
        self.operations += len(batch)
        for item in batch:
            item.outcome = Outcome.APPLIED
        for error in errors:
            item = batch[error["index"]]
            item.outcome = Outcome.CONFLICT
            if error.get("code") != DUPLICATE_KEY:
                item.error = WriteError(str(error.get("errmsg", "write error")), error.get("code"), dict(error))
        updates = [item for item in batch if isinstance(item.write, Cas) and item.error is None]
        if matched < len(updates):
            self._verify(updates)

    def _verify(self, updates: list[_Pending]) -> None:
        """Some update matched nothing: read the documents back; each proof tells."""
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


__all__ = ["Cas", "GroupCommit", "Outcome", "applied", "cas", "committer", "holds", "value_at"]
