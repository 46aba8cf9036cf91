"""The APScheduler 3 peer: a BackgroundScheduler, MongoDBJobStore, ThreadPoolExecutor.

Run as ``python -m bench.peers.apscheduler_app`` from the peers' virtualenv. Adds
N cron jobs (``CronTrigger(minute=M, hour=H)``, UTC) to a MongoDB job store on
``BENCH_MONGODB_URI`` / ``BENCH_MONGODB_DB``, runs them in-process on a thread
pool of ``BENCH_THREADS``, prints ``BENCH-READY`` once every job is stored and
the scheduler runs, and shuts down on SIGTERM.

``misfire_grace_time=None``: APScheduler's default grace is 1 s, past which a late
run is dropped ("missed"); the bench lets every run happen so lateness is
measured, and counts any missed run on stderr (``BENCH-MISSED <n>``) at exit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from apscheduler.events import EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.mongodb import MongoDBJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from pymongo import MongoClient

from bench.recorder import READY_MARKER, record_start


def noop(job: str) -> None:
    record_start(job)


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client: MongoClient = MongoClient(os.environ["BENCH_MONGODB_URI"], tz_aware=True)
    scheduler = BackgroundScheduler(
        jobstores={"default": MongoDBJobStore(database=os.environ["BENCH_MONGODB_DB"], collection="jobs", client=client)},
        executors={"default": ThreadPoolExecutor(int(os.environ.get("BENCH_THREADS", "16")))},
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        timezone="UTC",
    )
    missed = 0

    def count_missed(_event: object) -> None:
        nonlocal missed
        missed += 1

    scheduler.add_listener(count_missed, EVENT_JOB_MISSED)
    trigger = CronTrigger(minute=int(os.environ["BENCH_MINUTE"]), hour=int(os.environ["BENCH_HOUR"]), second=0, timezone="UTC")
    for index in range(int(os.environ["BENCH_N"])):
        name = f"bench_job_{index:05d}"
        scheduler.add_job("bench.peers.apscheduler_app:noop", trigger, args=(name,), id=name, replace_existing=True)
    scheduler.start()
    print(READY_MARKER, file=sys.stderr, flush=True)
    stop.wait()
    scheduler.shutdown(wait=False)  # its MongoDBJobStore closes the client
    print(f"BENCH-MISSED {missed}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
