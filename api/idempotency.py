"""``Idempotency-Key``: a retried POST answers its first response instead of acting twice.

Apply `idempotent` to a view (under `cronhive.api.auth` so the actor is known)::

    @mutating
    @idempotent
    def trigger(job_id: str) -> ...

Per (actor, endpoint, key) — the endpoint is the method and the view's name, so
the canonical and the doubled path are one endpoint — the first response (status,
body, ``Location``/``ETag``) is kept 24 h in MongoDB (`cronhive.idempotency`). A
repeat with the same path arguments and body answers it again with
``Idempotent-Replayed: true`` and no second effect; the same key with another
request → 422 ``idempotency_key_reused``; a repeat while the first is in
progress → 409 ``idempotency_key_in_progress`` (``Retry-After: 1``). Any answer
below 500 is kept (a validation error, a 404, a lease refusal: the same request
gets the same answer); a 5xx or an exception releases the claim, so a retry runs.
Claimed by inserting the record (unique ``_id``), so two API replicas racing the
same key act once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Response, current_app, request

from cronhive.api.auth import current_actor
from cronhive.api.errors import ApiError
from cronhive.idempotency import (
    CLAIM_TIMEOUT,
    MAX_KEY_LENGTH,
    RETENTION,
    IdempotencyRecord,
    StoredResponse,
    fingerprint,
    key_id,
)

F = TypeVar("F", bound=Callable[..., Any])

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
#: The response headers a replay repeats (besides the body's Content-Type).
KEPT_HEADERS = ("Content-Type", "Location", "ETag")


def _key() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all("\x21" <= char <= "\x7e" for char in key):
        raise ApiError(400, "invalid_idempotency_key",
                       f"{HEADER} must be 1-{MAX_KEY_LENGTH} visible ASCII characters.")
    return key


def _replay(held: IdempotencyRecord, stamp: str) -> Response:
    if held.fingerprint != stamp:
        raise ApiError(422, "idempotency_key_reused",
                       f"This {HEADER} was used with another request; use a new key for a new request.")
    if held.response is None:
        raise ApiError(409, "idempotency_key_in_progress",
                       f"The first request with this {HEADER} is still in progress; retry shortly.",
                       headers={"Retry-After": "1"})
    response = Response(held.response.body, status=held.response.status)
    for name, value in held.response.headers:
        response.headers[name] = value
    response.headers[REPLAYED] = "true"
    return response


def _answer(view: Callable[..., Any], args: Any, kwargs: Any) -> Response:
    """The view's response, its exceptions turned into the error responses they map to."""
    try:
        return current_app.make_response(view(*args, **kwargs))
    except Exception as exc:  # every handled error becomes the response the client gets
        return current_app.make_response(current_app.handle_user_exception(exc))


def idempotent(view: F) -> F:
    """Honour ``Idempotency-Key`` on ``view`` (see the module docstring)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = _key()
        if key is None:
            return view(*args, **kwargs)
        svc = current_app.extensions["cronhive"]
        store = svc.ready_store()
        actor = current_actor()
        endpoint = f"{request.method} {view.__name__}"
        now = svc.clock.now()
        stamp = fingerprint(request.view_args or {}, request.get_data(cache=True))
        record = IdempotencyRecord(key_id=key_id(actor, endpoint, key), actor=actor, endpoint=endpoint,
                                   fingerprint=stamp, claim=secrets.token_hex(8),
                                   claimed_until=now + CLAIM_TIMEOUT, expires_at=now + RETENTION)
        held = store.claim_idempotency_key(record, now)
        if held is not None:
            return _replay(held, stamp)
        try:
            response = _answer(view, args, kwargs)
        except BaseException:
            store.release_idempotency_key(record.key_id, record.claim)
            raise
        if response.status_code >= 500:
            store.release_idempotency_key(record.key_id, record.claim)
            return response
        kept = tuple((name, response.headers[name]) for name in KEPT_HEADERS if name in response.headers)
        store.complete_idempotency_key(record.key_id, record.claim,
                                       StoredResponse(response.status_code, response.get_data(), kept))
        return response

    return cast(F, wrapper)


__all__ = ["HEADER", "REPLAYED", "idempotent"]
