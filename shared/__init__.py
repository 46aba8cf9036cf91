"""cronhive: a distributed cron service.

This package is the core — settings, errors, the domain, the MongoDB store,
leases and cron math — and the public handler API a deployment's own modules
use::

    from cronhive import HandlerContext, handler

    @handler("send_report")
    def send_report(args: dict, ctx: HandlerContext) -> None:
        ...

The processes are subpackages over the core: `cronhive.api`, `cronhive.scheduler`
and `cronhive.worker` import from here and never from each other; the command
line (`cronhive.cli`: ``cronhive jobs``, ``cronhive up``) is an application over
the core, which the core never imports.
"""

from cronhive.handlers import HandlerContext, handler

__all__ = ["HandlerContext", "handler"]
