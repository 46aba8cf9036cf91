"""Maintenance windows (`cronhive.windows`): created, listed, read and ended early by
the API; read by the leader once per planning pass (`windows_between`) and by the
views that show a job ``paused`` (`open_windows`). Collection ``maintenance``,
indexes on ``end`` and ``start``."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection

from cronhive.errors import NotFound
from cronhive.store.base import Document, StoreBase, translated
from cronhive.store.documents import window_from_doc, window_to_doc
from cronhive.windows import MaintenanceWindow, WindowState

MAINTENANCE = "maintenance"
#: Most windows one read returns (a pass, a view); more open at once is not a plan.
MAX_WINDOWS_READ = 1000


class MaintenanceNotFound(NotFound):
    code = "maintenance_not_found"


def _not_found(maintenance_id: str) -> MaintenanceNotFound:
    return MaintenanceNotFound(f"maintenance window {maintenance_id!r} not found",
                               details={"maintenance_id": maintenance_id})


def _state_query(state: WindowState | None, now: datetime) -> Document:
    if state == WindowState.UPCOMING:
        return {"start": {"$gt": now}}
    if state == WindowState.ACTIVE:
        return {"start": {"$lte": now}, "end": {"$gt": now}}
    if state == WindowState.ENDED:
        return {"end": {"$lte": now}}
    return {}


class MaintenanceStore(StoreBase):
    """The ``maintenance`` collection."""

    @property
    def maintenance(self) -> Collection[Document]:
        return self.db[MAINTENANCE]

    def ensure_maintenance_indexes(self) -> None:
        self.maintenance.create_index([("end", ASCENDING)], name="by_end")
        self.maintenance.create_index([("start", DESCENDING), ("_id", DESCENDING)], name="by_start")

    @translated
    def create_window(self, window: MaintenanceWindow) -> MaintenanceWindow:
        self.maintenance.insert_one(window_to_doc(window))
        return window

    @translated
    def get_window(self, maintenance_id: str) -> MaintenanceWindow:
        doc = self.maintenance.find_one({"_id": maintenance_id})
        if doc is None:
            raise _not_found(maintenance_id)
        return window_from_doc(doc)

    @translated
    def list_windows(self, page: int, limit: int, now: datetime,
                     state: WindowState | None = None) -> tuple[list[MaintenanceWindow], int]:
        """One page, latest start first, and the total matching."""
        query = _state_query(state, now)
        total = self.maintenance.count_documents(query)
        cursor = (self.maintenance.find(query).sort([("start", DESCENDING), ("_id", DESCENDING)])
                  .skip((page - 1) * limit).limit(limit))
        return [window_from_doc(doc) for doc in cursor], total

    @translated
    def end_window(self, maintenance_id: str, now: datetime, actor: str | None = None) -> MaintenanceWindow:
        """End a window at ``now`` (an upcoming one is cancelled: it then never opens).
        A window that has already ended is left as it is."""
        window = self.get_window(maintenance_id)
        if window.end <= now:
            return window
        changes = {"end": now, "ended_early_at": now, "start": min(window.start, now), "ended_by": actor}
        doc = self.maintenance.find_one_and_update({"_id": maintenance_id, "end": window.end}, {"$set": changes},
                                                   return_document=ReturnDocument.AFTER)
        return window_from_doc(doc) if doc is not None else self.get_window(maintenance_id)

    @translated
    def open_windows(self, now: datetime) -> list[MaintenanceWindow]:
        """The windows open at ``now`` (index "by_end": those not yet ended)."""
        docs = self.maintenance.find({"end": {"$gt": now}}).sort("end", ASCENDING).limit(MAX_WINDOWS_READ)
        return [window for window in map(window_from_doc, docs) if window.holds(now)]

    @translated
    def windows_between(self, low: datetime, high: datetime) -> list[MaintenanceWindow]:
        """The windows that overlap ``[low, high]`` (index "by_end"), at most `MAX_WINDOWS_READ`."""
        docs = self.maintenance.find({"end": {"$gt": low}, "start": {"$lte": high}}).sort("end", ASCENDING)
        return [window_from_doc(doc) for doc in docs.limit(MAX_WINDOWS_READ)]
