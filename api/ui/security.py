"""The dashboard's session, sign-in, CSRF protection and response headers.

Session
    One cookie, ``cronhive_ui`` (``Path=/ui``, ``HttpOnly``, ``SameSite=Strict``,
    ``Secure`` when the request came over HTTPS), signed with itsdangerous
    (HMAC-SHA256) by ``UI_SECRET_KEY`` or, when unset, by the deployment's key in
    MongoDB (`cronhive.keys`): every API process and replica verifies what any
    other signed. It holds the CSRF token, the pending flash messages and, once
    signed in, the token's name and a *fingerprint* of it (HMAC-SHA256 keyed by
    the token), never the token itself: the cookie does not reveal the token, a
    forged cookie needs the token, and changing a token signs its sessions out.
    Any configured token signs in (``API_TOKEN``, named ``admin``, or one of
    ``API_TOKENS``); its name is the actor of the changes made from the session.
    Sessions last `SESSION_MAX_AGE_S`.

Actions
    Reading is public, like the API's GETs (with ``API_READS=token`` every page
    needs a signed-in session). Every POST carries the session's CSRF token (a
    hidden ``csrf_token`` field), and is refused (403) without it or when the
    browser says it comes from another site (``Origin`` / ``Sec-Fetch-Site``).
    With a token configured, every action also needs a session signed in with an
    admin token (401 and the sign-in form without a session; 403 for a ``read``
    token's).

Headers
    Every dashboard response carries a Content-Security-Policy that allows
    scripts, styles, images, fonts and fetches from this origin only (no inline
    script or style), ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin``
    and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from threading import Lock
from typing import Any
from urllib.parse import urlsplit

from flask import Response, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from cronhive.api.auth import OPEN, Principal, identify
from cronhive.keys import deployment_key
from cronhive.settings import ADMIN_TOKEN_NAME, Settings
from cronhive.store import MongoStore

COOKIE = "cronhive_ui"
COOKIE_PATH = "/ui"
SESSION_MAX_AGE_S = 12 * 3600
KEY_NAME = "ui-session"
_SALT = "cronhive.ui.session"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def token_fingerprint(token: str) -> str:
    """What a signed-in session holds: HMAC-SHA256 keyed by the API token."""
    return hmac.new(token.encode(), b"cronhive-ui-signed-in", hashlib.sha256).hexdigest()


@dataclass
class SessionKeys:
    """The signing key of the session cookie: from settings, else the deployment's (loaded once)."""

    settings: Settings
    store: MongoStore
    _key: bytes | None = None
    _lock: Lock = field(default_factory=Lock)

    def key(self) -> bytes:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    configured = self.settings.ui_secret_key
                    self._key = configured.encode() if configured else deployment_key(self.store, KEY_NAME)
        return self._key

    def serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.key(), salt=_SALT,
                                      signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256})


class UiSession(dict[str, Any]):
    """The decoded cookie; ``modified`` once anything was written."""

    modified = False

    def set(self, key: str, value: Any) -> None:
        self[key] = value
        self.modified = True

    def drop(self, key: str) -> None:
        if key in self:
            del self[key]
            self.modified = True

    def csrf_token(self) -> str:
        token = self.get("csrf")
        if not isinstance(token, str) or len(token) < 32:
            token = secrets.token_urlsafe(32)
            self.set("csrf", token)
        return token

    def flash(self, kind: str, message: str) -> None:
        self.set("flash", [*self.get("flash", [])[-4:], [kind, message]])

    def take_flashes(self) -> list[tuple[str, str]]:
        messages = [(str(kind), str(text)) for kind, text in self.get("flash", [])]
        if messages:
            self.drop("flash")
        return messages


def load_session(keys: SessionKeys) -> UiSession:
    """The request's session (empty when the cookie is missing, expired or forged)."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return UiSession()
    try:
        data = keys.serializer().loads(raw, max_age=SESSION_MAX_AGE_S)
    except BadSignature:
        session = UiSession()
        session.modified = True  # replace the bad cookie
        return session
    return UiSession(data) if isinstance(data, dict) else UiSession()


def save_session(keys: SessionKeys, session: UiSession, response: Response) -> None:
    if not session.modified:
        return
    response.set_cookie(COOKIE, keys.serializer().dumps(dict(session)), max_age=SESSION_MAX_AGE_S, path=COOKIE_PATH,
                        httponly=True, samesite="Strict", secure=request.is_secure)
    response.vary.add("Cookie")


def session_principal(settings: Settings, session: UiSession) -> Principal | None:
    """Who the session acts as: everybody (`OPEN`) when no token is configured, else the
    token it signed in with while that token still has the same secret, else None."""
    if not settings.auth_required:
        return OPEN
    held = session.get("auth")
    name = session.get("who", ADMIN_TOKEN_NAME)  # sessions from before named tokens: API_TOKEN's
    if not isinstance(held, str) or not isinstance(name, str):
        return None
    for token in settings.tokens:
        if token.name == name and hmac.compare_digest(held, token_fingerprint(token.secret)):
            return Principal(token.name, token.role)
    return None


def signed_in(settings: Settings, session: UiSession) -> bool:
    """True when actions are allowed: no token configured, or the session signed in
    with an admin token that is still configured."""
    principal = session_principal(settings, session)
    return principal is not None and principal.can_write


def sign_in(settings: Settings, session: UiSession, given: str) -> Principal | None:
    """Sign ``session`` in with the token ``given`` (None: no such token)."""
    principal = identify(settings, given)
    if principal is None:
        return None
    secret = next(token.secret for token in settings.tokens if token.name == principal.name)
    session.clear()
    session.set("auth", token_fingerprint(secret))
    session.set("who", principal.name)
    return principal


def same_origin_request() -> bool:
    """False when the browser says the request was sent by another site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    # the host only: behind a TLS-terminating proxy the scheme differs (forward the Host header)
    return urlsplit(origin).netloc == request.host


def csrf_ok(session: UiSession) -> bool:
    given = request.form.get("csrf_token", "")
    expected = session.get("csrf")
    return (isinstance(expected, str) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())
            and same_origin_request())


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response

