"""The dramatiq broker module of the periodiq peer: N periodic actors, one per job.

periodiq schedules actors, not (actor, arguments) pairs: a job is an actor with
a ``periodic=cron(...)`` option, so N jobs are N generated actors (``bench_job_00000``…)
sharing one no-op body, all on queue ``BENCH_QUEUE``. Loaded by
``periodiq bench.peers.periodiq_app`` (the scheduler) and
``dramatiq bench.peers.periodiq_app --processes 2 --threads 8`` (the workers).

``PeriodiqMiddleware(skip_delay=...)``: periodiq drops messages older than
``skip_delay`` (default 30 s) at the worker; the bench raises it to
``BENCH_SKIP_DELAY_S`` so a slow herd is measured rather than silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from periodiq import PeriodiqMiddleware, cron

from bench.recorder import record_start

queue = os.environ["BENCH_QUEUE"]
broker = RabbitmqBroker(url=os.environ["BENCH_RABBITMQ_URL"])
broker.add_middleware(PeriodiqMiddleware(skip_delay=int(os.environ.get("BENCH_SKIP_DELAY_S", "600"))))
dramatiq.set_broker(broker)


def _job_body(job: str) -> Callable[[], None]:
    def run() -> None:
        record_start(job)

    run.__name__ = job
    return run


schedule = cron(os.environ["BENCH_CRON"])
for index in range(int(os.environ["BENCH_N"])):
    name = f"bench_job_{index:05d}"
    dramatiq.actor(_job_body(name), actor_name=name, queue_name=queue, max_retries=0, periodic=schedule)
