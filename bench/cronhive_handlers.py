"""The benchmark handlers cronhive's workers load (``HANDLER_MODULES=bench.cronhive_handlers``).

``bench_record`` records its start exactly as the peers' no-op handlers do
(`bench.recorder.record_start`), keyed by the job id, then returns: the herd,
where each job fires once.

``bench_record_slot`` records the same way, keyed ``<job_id>|<slot epoch seconds>``
(the run's ``scheduled_for``; ``manual`` for a manual run): the scale and
failover scenarios, where each job fires many times and every slot's handler
executions are counted (lost and doubled slots).
"""

from __future__ import annotations

from typing import Any

from bench.recorder import record_start
from cronhive import HandlerContext, handler


def slot_key(job_id: str, slot_epoch: int | None) -> str:
    """The start-record key of one slot of one job."""
    return f"{job_id}|{'manual' if slot_epoch is None else slot_epoch}"


def parse_slot_key(key: str) -> tuple[str, int | None]:
    job_id, _, slot = key.rpartition("|")
    return job_id, None if slot == "manual" else int(slot)


@handler("bench_record")
def bench_record(args: dict[str, Any], ctx: HandlerContext) -> None:
    record_start(ctx.job_id)


@handler("bench_record_slot")
def bench_record_slot(args: dict[str, Any], ctx: HandlerContext) -> None:
    slot = ctx.scheduled_for
    record_start(slot_key(ctx.job_id, None if slot is None else round(slot.timestamp())))
