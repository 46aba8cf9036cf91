"""Idempotency keys: the first response to a request sent with an ``Idempotency-Key``,
kept so that a repeat answers it again instead of acting twice.

A record is keyed by `key_id` — a hash of (actor, endpoint, key), so two tokens
never see each other's keys — and claimed by inserting it (the insert is the
claim: of two API replicas racing the same key exactly one inserts). While the
first request runs the record is *in progress* (``response`` None); it then holds
the response (status, body, a few headers) until ``expires_at`` (24 h; a TTL
index removes it). A claim whose request failed (5xx, an exception) is released;
one whose process died is taken over after its ``claimed_until``.

Pure values; the store (`cronhive.store.idempotency`) writes and reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

#: How long the first response is kept.
RETENTION = timedelta(hours=24)
#: How long a claim holds without an answer before another request may take it over
#: (its process died mid-request).
CLAIM_TIMEOUT = timedelta(seconds=60)
MAX_KEY_LENGTH = 255


def key_id(actor: str, endpoint: str, key: str) -> str:
    """The record's id: SHA-256 of actor, endpoint and key (NUL-separated)."""
    return hashlib.sha256("\0".join((actor, endpoint, key)).encode()).hexdigest()


def fingerprint(path_args: Mapping[str, Any], body: bytes) -> str:
    """What makes two requests "the same": their path arguments and their body (as JSON
    value when it is JSON — key order and spacing do not count — else the bytes)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode() if body else b""
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256(json.dumps(dict(path_args), sort_keys=True).encode() + b"\0" + canonical)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    """The first response: status, body and the headers worth replaying."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class IdempotencyRecord:
    key_id: str
    actor: str
    endpoint: str
    fingerprint: str
    #: a random id of the request holding the claim (only it completes or releases it)
    claim: str
    claimed_until: datetime
    expires_at: datetime
    response: StoredResponse | None = None

    @property
    def in_progress(self) -> bool:
        return self.response is None

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now

    def abandoned(self, now: datetime) -> bool:
        """In progress past its claim: the request's process died."""
        return self.in_progress and self.claimed_until <= now


__all__ = ["CLAIM_TIMEOUT", "MAX_KEY_LENGTH", "RETENTION", "IdempotencyRecord", "StoredResponse", "fingerprint",
           "key_id"]
