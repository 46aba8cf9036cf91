"""Who is asking: the bearer token of a request, its name (the actor of every
change it makes) and its role."""

from __future__ import annotations

from flask import g

from cronhive.revisions import ANONYMOUS

#: The actor name of the unnamed ``API_TOKEN``.
ADMIN_ACTOR = "admin"


def current_actor() -> str:
    """The name of the token that authenticated this request (``anonymous`` when no
    token is configured, so writes are open)."""
    actor = g.get("cronhive_actor")
    return actor if isinstance(actor, str) else ANONYMOUS
