"""A handler only some worker processes load (``HANDLER_MODULES`` adds this module on
them): a rolling deploy, where the new handler is not on every worker yet."""

from __future__ import annotations

import os
from typing import Any

from cronhive import HandlerContext, handler


@handler("rolling_only")
def rolling_only(args: dict[str, Any], ctx: HandlerContext) -> dict[str, Any]:
    """Returns the pid of the worker process that ran it."""
    return {"pid": os.getpid()}
