"""Who is asking: the bearer token of a request, its name (the actor of every
change it makes) and its role.

Tokens: ``API_TOKEN`` (unnamed, admin, actor ``admin``) and ``API_TOKENS``
(``name:secret[:read]``; `cronhive.settings.ApiToken`). With none configured
everything is open and changes are made by ``anonymous``.

`guard_request` runs before every request of the REST blueprints: any method but
GET/HEAD/OPTIONS is a write — it needs an admin token (401 without a valid one,
403 ``forbidden`` for a ``read`` token) unless its view is marked `reads_only`
(``POST /schedules/preview`` stores nothing); under ``API_READS=token`` every
read needs a valid token of either role too, except the endpoints listed in
`OPEN_ENDPOINTS`. So a new endpoint is guarded by being added, not by
remembering a decorator (``tests/api/test_roles.py`` walks the URL map).

Every presented secret is compared with every configured one in constant time
(`hmac.compare_digest`, no early exit); secrets never reach a log line or an
error message.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import current_app, g, request

from cronhive.api.errors import ApiError
from cronhive.enums import ReadAccess, TokenRole
from cronhive.revisions import ANONYMOUS
from cronhive.settings import ADMIN_TOKEN_NAME, Settings

P = ParamSpec("P")
R = TypeVar("R")

#: The actor name of the unnamed ``API_TOKEN``.
ADMIN_ACTOR = ADMIN_TOKEN_NAME
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Views of the REST blueprints readable without a token under ``API_READS=token``
#: (by their function name): the OpenAPI document describes the API, holds no data.
OPEN_ENDPOINTS = frozenset({"openapi"})
_BEARER = "Bearer "


@dataclass(frozen=True)
class Principal:
    """Who a request (or a dashboard session) acts as."""

    name: str
    role: TokenRole

    @property
    def can_write(self) -> bool:
        return self.role == TokenRole.ADMIN


#: Everybody, when no token is configured.
OPEN = Principal(ANONYMOUS, TokenRole.ADMIN)


def identify(settings: Settings, presented: str | None) -> Principal | None:
    """The token whose secret is ``presented`` (each configured secret compared in
    constant time, every one of them, whatever matched), or None."""
    if not presented:
        return None
    given = presented.encode()
    found: Principal | None = None
    for token in settings.tokens:
        if hmac.compare_digest(given, token.secret.encode()) and found is None:
            found = Principal(token.name, token.role)
    return found


def bearer_secret() -> str | None:
    """The secret of ``Authorization: Bearer <secret>`` (the scheme exactly so), or None."""
    header = request.headers.get("Authorization", "")
    return header[len(_BEARER):] if header.startswith(_BEARER) else None


def _unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "A valid bearer token is required.", headers={"WWW-Authenticate": "Bearer"})


def _forbidden(principal: Principal) -> ApiError:
    return ApiError(403, "forbidden", f"The token {principal.name!r} may only read; this request changes something.",
                    {"token": principal.name, "role": principal.role})


def is_write(view: Callable[..., Any] | None, method: str) -> bool:
    """A request changes something: any method but GET/HEAD/OPTIONS, unless its view
    is marked `reads_only`."""
    return method not in SAFE_METHODS and not getattr(view, "reads_only", False)


def authorize(settings: Settings, writes: bool, open_read: bool = False) -> Principal:
    """The request's principal, or `ApiError` 401/403 when it may not do this."""
    if not settings.auth_required:
        return OPEN
    principal = identify(settings, bearer_secret())
    if writes:
        if principal is None:
            raise _unauthorized()
        if not principal.can_write:
            raise _forbidden(principal)
    elif principal is None and settings.api_reads == ReadAccess.TOKEN and not open_read:
        raise _unauthorized()
    return principal or Principal(ANONYMOUS, TokenRole.READ)


def guard_request() -> None:
    """``before_request`` of the REST blueprints (see the module docstring)."""
    view = current_app.view_functions.get(request.endpoint or "")
    name = getattr(view, "__name__", "")
    principal = authorize(current_app.extensions["cronhive"].settings, is_write(view, request.method),
                          open_read=name in OPEN_ENDPOINTS)
    g.cronhive_principal = principal
    g.cronhive_actor = principal.name


def current_actor() -> str:
    """The name of the token that authenticated this request (``anonymous`` when no
    token is configured, so writes are open)."""
    actor = g.get("cronhive_actor")
    return actor if isinstance(actor, str) else ANONYMOUS


def mutating(view: Callable[P, R]) -> Callable[P, R]:
    """Marks (and guards, wherever it is mounted) a view that changes something: an
    admin token is required when tokens are configured. `guard_request` already
    guards every write of the REST blueprints; this keeps a view safe elsewhere."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if "cronhive_principal" not in g:
            g.cronhive_principal = authorize(current_app.extensions["cronhive"].settings, writes=True)
            g.cronhive_actor = g.cronhive_principal.name
        elif not g.cronhive_principal.can_write:
            raise _forbidden(g.cronhive_principal)
        return view(*args, **kwargs)

    return wrapper


def reads_only(view: Callable[P, R]) -> Callable[P, R]:
    """Marks a view served by POST that stores nothing (a read token may call it)."""
    view.reads_only = True  # type: ignore[attr-defined]
    return view
