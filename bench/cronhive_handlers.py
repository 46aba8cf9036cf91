"""The benchmark handler cronhive's workers load (``HANDLER_MODULES=bench.cronhive_handlers``).

``bench_record`` records its start exactly as the peers' no-op handlers do
(`bench.recorder.record_start`), keyed by the job id, then returns.
"""

from __future__ import annotations

from typing import Any

from bench.recorder import record_start
from shared.handlers import HandlerContext, handler


@handler("bench_record")
def bench_record(args: dict[str, Any], ctx: HandlerContext) -> None:
    record_start(ctx.job_id)
