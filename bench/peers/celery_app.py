"""The Celery app of the celery-beat peer: N crontab beat entries, one no-op task.

Loaded by ``celery -A bench.peers.celery_app beat`` and ``... worker`` from the
peers' virtualenv. Reads ``BENCH_N``, ``BENCH_MINUTE``, ``BENCH_HOUR``,
``BENCH_QUEUE``, ``BENCH_RABBITMQ_URL``, ``BENCH_RECORD_DIR``.
Every exchange and queue it uses is named from ``BENCH_QUEUE`` so the harness can
delete them afterwards. Results are ignored (no result backend), as a cron job's are.
"""

from __future__ import annotations

import os
import sys

from celery import Celery
from celery.schedules import crontab
from celery.signals import beat_init, worker_ready

from bench.recorder import READY_MARKER, record_start

queue = os.environ["BENCH_QUEUE"]
app = Celery("bench", broker=os.environ["BENCH_RABBITMQ_URL"])
app.conf.update(
    timezone="UTC",
    enable_utc=True,
    task_ignore_result=True,
    task_default_queue=queue,
    task_default_exchange=queue,
    task_default_routing_key=queue,
    control_exchange=f"{queue}.control",
    event_exchange=f"{queue}.events",
    broker_connection_retry_on_startup=True,
    beat_schedule={
        f"bench_job_{index:05d}": {
            "task": "bench.noop",
            "schedule": crontab(minute=os.environ["BENCH_MINUTE"], hour=os.environ["BENCH_HOUR"]),
            "args": (f"bench_job_{index:05d}",),
        }
        for index in range(int(os.environ["BENCH_N"]))
    },
)


@app.task(name="bench.noop")
def noop(job: str) -> None:
    record_start(job)


@worker_ready.connect
@beat_init.connect
def _announce_ready(**_kwargs: object) -> None:
    print(READY_MARKER, file=sys.stderr, flush=True)
