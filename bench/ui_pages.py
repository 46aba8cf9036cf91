"""Server time of the dashboard's pages on a large store: ``python -m bench.ui_pages``.

Seeds a fresh SecantusDB (or ``BENCH_MONGODB_URI``) with ``--jobs`` jobs (created
through `MongoStore.create_job`, as the API creates them: a mix of schedules, zones,
handlers, 10 % disabled) and ``--runs`` finished runs spread over the last 7 days
(outcomes: mostly succeeded, some failed, timed out, abandoned, skipped by overlap,
missed by misfire), plus worker and scheduler heartbeats. Then it renders each page
in-process through Flask's test client — the time measured is the server's: routing,
MongoDB, rendering — ``--views`` times after one warm-up view, and counts the MongoDB
commands each view sends (a pymongo command listener). The overview's parts are timed
one by one too. Prints a table; writes ``bench/results/ui_pages.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import monitoring

from bench.machine import _cpu_model, _memory
from cronhive import heartbeats, stats
from cronhive.api.app import close_app, create_app
from cronhive.api.ui.views import JOBS_PER_PAGE
from cronhive.domain import Heartbeat, RunError, new_run
from cronhive.enums import RunStatus, SchedulerRole, Trigger
from cronhive.heartbeats import WorkerBeat
from cronhive.settings import Settings
from cronhive.store import JobPosition, MongoStore
from cronhive.store.documents import job_from_doc, run_to_doc

RESULTS = Path(__file__).resolve().parent / "results" / "ui_pages.json"
SCHEDULES = ["{m} {h} * * *"] * 6 + ["{m} * * * *"] * 3 + ["*/5 * * * *", "*/15 * * * *", "{m} {h} * * mon-fri",
                                                          "0 {m} {h} * * *", "{m} {h} 1 * *"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
HANDLERS = ["noop", "sleep", "reminder_scheduler", "fail"]
OUTCOMES = (["succeeded"] * 90 + ["failed"] * 4 + ["timed_out"] + ["abandoned"] + ["skipped:overlap"] * 3
            + ["skipped:misfire"])


class Counter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in {"hello", "ismaster", "isMaster", "endSessions"}:
            with self._lock:
                self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> int:
        with self._lock:
            value, self.count = self.count, 0
        return value


def seed(store: MongoStore, jobs: int, runs: int, now: datetime, rng: random.Random) -> tuple[list[str], str]:
    started = time.perf_counter()
    ids = []
    created_jobs = {}
    for index in range(jobs):
        schedule = rng.choice(SCHEDULES).format(m=rng.randrange(60), h=rng.randrange(24))
        fields = {"name": f"{rng.choice(['Report', 'Sync', 'Backup', 'Reminder', 'Cleanup', 'Export'])} {index:05d}",
                  "schedule": schedule, "timezone": rng.choice(ZONES), "handler": rng.choice(HANDLERS),
                  "enabled": rng.random() >= 0.1, "args": {"n": index}, "jitter_s": rng.choice([0, 0, 0, 30])}
        job = store.create_job(fields, now - timedelta(milliseconds=(jobs - index) * 37))
        created_jobs[job.job_id] = job
        ids.append(job.job_id)
    print(f"seeded {jobs:,} jobs in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    sample_run = ""
    for index in range(runs):
        job_id = rng.choice(ids)
        created = now - timedelta(seconds=rng.uniform(0, 7 * 86400))
        outcome = rng.choice(OUTCOMES)
        status, _, why = outcome.partition(":")
        run = new_run(created_jobs[job_id], f"run_bench_{index:06d}", Trigger.SCHEDULE, created, created, None,
                      status=RunStatus(status))
        lateness = int(rng.expovariate(1 / 80)) if status != "skipped" else None
        duration = int(rng.expovariate(1 / 900)) if status != "skipped" else None
        run = replace(run, started_at=None if lateness is None else created + timedelta(milliseconds=lateness),
                      finished_at=created + timedelta(milliseconds=(lateness or 0) + (duration or 0)),
                      lateness_ms=lateness, duration_ms=duration, attempt=0 if status == "skipped" else 1,
                      worker=None if status == "skipped" else f"worker-{index % 4}:{1000 + index % 4}",
                      error=RunError(why, f"slot {why}") if why else (
                          RunError("RuntimeError", "boom") if status == "failed" else None))
        batch.append(run_to_doc(run))
        sample_run = run.run_id
        if len(batch) == 5000:
            store.runs.insert_many(batch)
            batch = []
    if batch:
        store.runs.insert_many(batch)
    print(f"seeded {runs:,} runs in {time.perf_counter() - started:.1f} s", flush=True)
    # a healthy leader keeps every enabled job's due_at ahead of now: advance the ones the
    # seeding left behind, as the scheduler would have
    later = store.server_time()
    behind = list(store.jobs.find({"due_at": {"$gt": datetime(1970, 1, 1, tzinfo=UTC), "$lt": later + timedelta(minutes=5)}}))
    for doc in behind:
        store.jobs.update_one({"_id": doc["_id"]},
                              {"$set": job_from_doc(doc).schedule_state(later + timedelta(minutes=5))})
    print(f"advanced {len(behind):,} jobs past the seeding's minutes", flush=True)
    for number in range(4):
        heartbeats.beat(store, WorkerBeat(f"worker-{number}:{1000 + number}", f"worker-{number}", 1000 + number,
                                          "cronhive.runs", 8, tuple(HANDLERS), 2, 1234), now)
    store.scheduler_heartbeat(Heartbeat("scheduler-b:2001", SchedulerRole.STANDBY, None), now,
                              now + timedelta(seconds=30))
    return ids, sample_run


def timed(views: int, call: Callable[[], Any], counter: Counter) -> dict[str, Any]:
    call()  # warm-up (a first view also computes the hours not kept yet)
    counter.take()
    times, commands = [], []
    for _ in range(views):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
        commands.append(counter.take())
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
            "min_ms": round(min(times), 1), "commands": max(commands), "views": views}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.services import SecantusServer, wait_for_mongodb

    server = None
    uri = args.mongodb_uri
    if not uri:
        server = SecantusServer(data_dir=tempfile.mkdtemp(prefix="cronhive-bench-ui-")).start()
        uri = server.uri
    wait_for_mongodb(uri)
    settings = Settings.from_env({"MONGODB_URI": uri, "MONGODB_DB": f"cronhive_bench_ui_{int(time.time())}",
                                  "RUNS_QUEUE": "cronhive.bench.ui.runs", "LOG_LEVEL": "WARNING",
                                  "MONGODB_TIMEOUT_MS": "20000"})
    counter = Counter()
    store = MongoStore.open(settings, event_listeners=[counter])
    try:
        store.ensure_indexes()
        stats.ensure_indexes(store)
        now = store.server_time()
        ids, run_id = seed(store, args.jobs, args.runs, now, random.Random(7))
        app = create_app(settings, store=store)
        app.testing = True
        client = app.test_client()
        job_id = ids[len(ids) // 2]
        deep = JobPosition.of(store.get_job(ids[min(len(ids) - 1, 3999)]))
        counter.take()  # the seeding's commands

        def page(path: str) -> Callable[[], Any]:
            def view() -> None:
                response = client.get(path)
                assert response.status_code == 200, (path, response.status_code)
            return view

        started = time.perf_counter()
        page("/ui/")()
        cold_ms = (time.perf_counter() - started) * 1000
        cold_commands = counter.take()
        pages = {
            "overview /ui/": page("/ui/"),
            "overview live fragment /ui/live": page("/ui/live"),
            "overview, search ?q=": page("/ui/?q=Backup%2001"),
            "overview, filter handler+status": page("/ui/?handler=sleep&status=active"),
            "overview, deep page (?after=, 4,000 jobs in)": page(f"/ui/?after={deep.token()}"),
            "overview, page before it (?before=)": page(f"/ui/?before={deep.token()}"),
            "job page /ui/jobs/<id>": page(f"/ui/jobs/{job_id}"),
            "job live fragment": page(f"/ui/jobs/{job_id}/live"),
            "run page /ui/runs/<id>": page(f"/ui/runs/{run_id}"),
            "edit form": page(f"/ui/jobs/{job_id}/edit"),
            "preview fragment": page("/ui/preview?schedule=30+2+*+*+*&timezone=Europe/Berlin"),
            "API GET /api/v1/cron/jobs (for comparison)": page("/api/v1/cron/jobs"),
        }
        results = {name: timed(args.views, call, counter) for name, call in pages.items()}
        clock_now = app.extensions["cronhive"].clock.now
        parts: dict[str, Callable[[], Any]] = {
            "jobs table (MongoStore.browse_jobs)": lambda: store.browse_jobs(JOBS_PER_PAGE, clock_now()),
            "GET /jobs' listing (MongoStore.list_jobs)": lambda: store.list_jobs(1, 20),
            "job counts (cronhive.stats.job_counts)": lambda: stats.job_counts(store),
            "runs per hour + lateness (stats.run_activity)": lambda: stats.run_activity(store, clock_now()),
            "next fires (stats.upcoming_fires)": lambda: stats.upcoming_fires(store, clock_now(), timedelta(hours=1), 12),
            "leader (MongoStore.scheduler_status)": lambda: store.scheduler_status(clock_now()),
            "workers (heartbeats.alive)": lambda: heartbeats.alive(store, clock_now()),
            "running (MongoStore.running_runs)": lambda: store.running_runs(10),
            "recently finished (stats.recently_finished)": lambda: stats.recently_finished(store, clock_now(), 10),
        }
        breakdown = {name: timed(args.views, call, counter) for name, call in parts.items()}
        close_app(app)
        return {
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "store": "SecantusDB (tests.services.SecantusServer)" if server else "BENCH_MONGODB_URI",
            "machine": {"cpu": _cpu_model(), "memory": _memory()},
            "jobs": args.jobs, "runs": args.runs,
            "first_overview_view": {"ms": round(cold_ms, 1), "commands": cold_commands},
            "pages": results, "overview_parts": breakdown,
            "target_ms": 300,
        }
    finally:
        try:
            if server is None:
                store.client.drop_database(settings.mongodb_db)
        finally:
            store.close()
            if server is not None:
                server.cleanup()


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['jobs']:,} jobs, {result['runs']:,} runs on {result['store']}; server time per view, "
          f"{next(iter(result['pages'].values()))['views']} views each after a warm-up")
    print(f"first overview view (computes the 24 h counts once): {result['first_overview_view']['ms']:,.1f} ms, "
          f"{result['first_overview_view']['commands']} commands")
    print(f"| {'page':<44} | {'p50 ms':>8} | {'max ms':>8} | {'MongoDB commands':>16} |")
    print(f"| {'-' * 44} | {'-' * 8}: | {'-' * 8}: | {'-' * 16}: |")
    for name, row in result["pages"].items():
        print(f"| {name:<44} | {row['p50_ms']:>8,.1f} | {row['max_ms']:>8,.1f} | {row['commands']:>16} |")
    print("\nthe overview's parts:")
    print(f"| {'part':<50} | {'p50 ms':>8} | {'commands':>8} |")
    print(f"| {'-' * 50} | {'-' * 8}: | {'-' * 8}: |")
    for name, row in result["overview_parts"].items():
        print(f"| {name:<50} | {row['p50_ms']:>8,.1f} | {row['commands']:>8} |")


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m bench.ui_pages", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--mongodb-uri", default=os.environ.get("BENCH_MONGODB_URI"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args)
    print_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
