"""Idempotency records (`cronhive.idempotency`): collection ``idempotency_keys``,
``_id`` the key's hash; inserting is claiming; a TTL index on ``expires_at``
removes them after 24 h (reads check ``expires_at`` too, the TTL monitor runs
only once a minute)."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from cronhive.idempotency import IdempotencyRecord, StoredResponse
from cronhive.store.base import Document, StoreBase, translated
from cronhive.store.documents import idempotency_from_doc, idempotency_to_doc, stored_response_to_doc

IDEMPOTENCY_KEYS = "idempotency_keys"
MAX_CLAIM_ATTEMPTS = 5


class IdempotencyStore(StoreBase):
    """The ``idempotency_keys`` collection."""

    @property
    def idempotency_keys(self) -> Collection[Document]:
        return self.db[IDEMPOTENCY_KEYS]

    def ensure_idempotency_indexes(self) -> None:
        self.idempotency_keys.create_index([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=0)

    @translated
    def claim_idempotency_key(self, record: IdempotencyRecord, now: datetime) -> IdempotencyRecord | None:
        """Claim ``record``'s key (None: claimed, go ahead), or the record that holds it:
        answered, in progress, or made by another request (its fingerprint differs).
        An expired record, or one abandoned by a dead process for the same request, is
        taken over (compare-and-set on its claim)."""
        doc = idempotency_to_doc(record)
        for _ in range(MAX_CLAIM_ATTEMPTS):
            try:
                self.idempotency_keys.insert_one(doc)
                return None
            except DuplicateKeyError:
                pass
            found = self.idempotency_keys.find_one({"_id": record.key_id})
            if found is None:
                continue  # removed meanwhile: insert again
            held = idempotency_from_doc(found)
            if not (held.expired(now) or (held.abandoned(now) and held.fingerprint == record.fingerprint)):
                return held
            replaced = self.idempotency_keys.find_one_and_replace({"_id": held.key_id, "claim": held.claim}, doc,
                                                                  return_document=ReturnDocument.AFTER)
            if replaced is not None:
                return None
        raise RuntimeError("idempotency key could not be claimed")  # pragma: no cover - needs 5 lost races

    @translated
    def complete_idempotency_key(self, key_id: str, claim: str, response: StoredResponse) -> bool:
        """Keep ``response`` as the key's answer (only the claim's holder can)."""
        result = self.idempotency_keys.update_one({"_id": key_id, "claim": claim},
                                                  {"$set": {"response": stored_response_to_doc(response)}})
        return result.modified_count == 1

    @translated
    def release_idempotency_key(self, key_id: str, claim: str) -> None:
        """Give the key up (the request failed): a retry may claim it."""
        self.idempotency_keys.delete_one({"_id": key_id, "claim": claim})


__all__ = ["IDEMPOTENCY_KEYS", "IdempotencyStore"]
