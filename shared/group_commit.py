"""Group commit: the writes of a process's threads, batched into one command.

Each worker thread makes a few single-document writes per run (a claim, an
outcome). On the store a round trip costs far more than the document it writes,
so a `GroupCommit` collects the writes that threads submit while one batch is in
flight and sends them as the next ``bulk_write`` (unordered): whoever submits
into an idle committer writes at once (no added wait when the process is idle),
and under load batches form by themselves, each caller learning its own result.

Compare-and-set in a batch
    A bulk write reports one matched count for all its updates, not which of
    them matched. `cas` writes an ``UpdateOne(expected_state, update,
    upsert=True)``: if the document no longer matches the expectation, the
    upsert tries to insert a document with the same ``_id`` and fails with a
    duplicate-key error *at its index* — so the result of every compare-and-set
    is known exactly (`Outcome.CONFLICT`). If the document does not exist at all,
    the upsert inserts one: that is reported `Outcome.MISSING` and the inserted
    document (marked ``_phantom``) is deleted again at once; readers of the
    collection never match it, because every upsert sets the ``_phantom`` marker
    the compensating delete filters on.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pymongo import DeleteOne, InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from cronhive.store import translate_errors
from cronhive.store.base import DUPLICATE_KEY

#: Largest batch in one command (MongoDB accepts up to 100,000 operations).
MAX_BATCH = 1000
PHANTOM = "_phantom"


class Outcome(StrEnum):
    APPLIED = "applied"
    #: the compare-and-set found the document changed (or the insert's id taken)
    CONFLICT = "conflict"
    #: the document of the compare-and-set does not exist
    MISSING = "missing"


Operation = InsertOne[Any] | UpdateOne | DeleteOne


@dataclass
class _Pending:
    op: Operation
    upsert_marker: bool
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    error: BaseException | None = None


def cas(doc_id: Any, expected: Mapping[str, Any], update: Mapping[str, Any]) -> UpdateOne:
    """A compare-and-set of the document ``doc_id``: ``update`` applies only while the
    fields of ``expected`` (dotted paths allowed) hold exactly these values.
    ``update`` is an update document (``$set``...), not a pipeline."""
    ops = {key: dict(value) for key, value in update.items()}
    ops.setdefault("$setOnInsert", {})[PHANTOM] = True
    return UpdateOne({"_id": doc_id, **expected}, ops, upsert=True)


class GroupCommit:
    """Batches the writes submitted by many threads into one ``bulk_write`` each."""

    def __init__(self, collection: Collection[Any], *, max_batch: int = MAX_BATCH, uri: str = "") -> None:
        self.collection = collection
        self.max_batch = max_batch
        self.uri = uri
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._flushing = False
        #: commands sent and operations written, for the metrics and the bench
        self.commands = 0
        self.operations = 0

    def submit(self, op: Operation) -> Outcome:
        """Write ``op`` in the next batch; its outcome (raises what the write raised,
        e.g. `StoreUnavailable`)."""
        return self.submit_many([op])[0]

    def submit_many(self, ops: Sequence[Operation]) -> list[Outcome]:
        pending = [_Pending(op, isinstance(op, UpdateOne) and bool(op._upsert)) for op in ops]
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
        for item in batch:
            item.outcome = Outcome.APPLIED
        errors: list[dict[str, Any]] = []
        upserted: list[dict[str, Any]] = []
        with translate_errors(self.uri):
            try:
                result = self.collection.bulk_write([item.op for item in batch], ordered=False)
                upserted = list(result.bulk_api_result.get("upserted", []))
            except BulkWriteError as exc:
                errors = list(exc.details.get("writeErrors", []))
                upserted = list(exc.details.get("upserted", []))
        self.commands += 1
        self.operations += len(batch)
        for error in errors:
            item = batch[error["index"]]
            if error.get("code") != DUPLICATE_KEY:
                item.error = _write_error(error)
            item.outcome = Outcome.CONFLICT
        phantoms = []
        for entry in upserted:
            batch[entry["index"]].outcome = Outcome.MISSING
            phantoms.append(DeleteOne({"_id": entry["_id"], PHANTOM: True}))
        if phantoms:
            with translate_errors(self.uri):
                self.collection.bulk_write(phantoms, ordered=False)
            self.commands += 1


def _write_error(error: Mapping[str, Any]) -> Exception:
    from pymongo.errors import WriteError

    return WriteError(str(error.get("errmsg", "write error")), error.get("code"), dict(error))


__all__ = ["PHANTOM", "GroupCommit", "Outcome", "cas"]
