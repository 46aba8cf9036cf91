"""Per-deployment secrets kept in MongoDB (collection ``ui_keys``).

`deployment_key(store, name)` returns the same random key to every process of a
deployment: the first caller creates it (an insert that only one caller can win,
the others read the winner's), and it never changes until an operator deletes the
document (which signs everyone out of the dashboard). Used for the dashboard's
session cookie when ``UI_SECRET_KEY`` is not set.
"""

from __future__ import annotations

import secrets

from pymongo.errors import DuplicateKeyError

from cronhive.domain import utcnow
from cronhive.store import MongoStore, translate_errors

COLLECTION = "ui_keys"
KEY_BYTES = 32


def deployment_key(store: MongoStore, name: str) -> bytes:
    """The deployment's key ``name`` (created on first use)."""
    keys = store.db[COLLECTION]
    with translate_errors(store.uri):
        doc = keys.find_one({"_id": name})
        if doc is None:
            try:
                keys.insert_one({"_id": name, "key": secrets.token_hex(KEY_BYTES), "created_at": utcnow()})
            except DuplicateKeyError:
                pass  # another process created it first: use theirs
            doc = keys.find_one({"_id": name})
    if doc is None:  # deleted between the insert and the read: try once more
        return deployment_key(store, name)
    return bytes.fromhex(str(doc["key"]))
