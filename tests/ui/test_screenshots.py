"""The README's screenshots: the overview and a job page of a store with a day of history
(jobs created through the API, past runs written as workers write them). Saved as
tests/artifacts/docs-overview.png and docs-job.png; docs/ holds the committed copies."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

from playwright.sync_api import Page, expect

from cronhive.domain import RunError, new_run
from cronhive.enums import RunStatus, Trigger
from cronhive.store import MongoStore
from cronhive.store.documents import run_to_doc
from tests.ui.conftest import Stack, screenshot

JOBS = [
    ("Nightly billing export", "15 2 * * *", "Europe/Berlin", "sleep", {"seconds": 1}),
    ("Send reminder emails", "0 8 * * mon-fri", "America/New_York", "reminder_scheduler", {"batch": 500}),
    ("Refresh search index", "*/10 * * * *", "UTC", "noop", {}),
    ("Rotate API keys", "0 4 1 * *", "UTC", "noop", {"keep": 2}),
    ("Warm product cache", "30 * * * *", "Asia/Tokyo", "noop", {}),
    ("Purge expired sessions", "0 */6 * * *", "UTC", "noop", {}),
    ("Sync CRM contacts", "0 */15 * * * *", "Europe/London", "sleep", {"seconds": 2}),
    ("Weekly usage report", "0 7 * * mon", "Europe/Paris", "noop", {"to": "ops@example.com"}),
]


def history(stack: Stack, job_id: str, count: int, rng: random.Random, every: timedelta) -> None:
    client, _ = stack.db()
    try:
        store = MongoStore(client, stack.db_name, owns_client=False)
        job = store.get_job(job_id)
        now = store.server_time()
        runs = []
        for number in range(count):
            slot = now - every * (number + 1)
            roll = rng.random()
            status = "succeeded" if roll < 0.86 else "failed" if roll < 0.93 else "skipped" if roll < 0.98 else "timed_out"
            run = new_run(job, f"run_{slot.strftime('%Y%m%d_%H%M%S')}_{job_id[-6:]}{number}", Trigger.SCHEDULE, slot,
                          slot, None, status=RunStatus(status))
            if status == "skipped":
                run = replace(run, finished_at=slot, error=RunError(rng.choice(["overlap", "misfire"]), "slot skipped"))
            else:
                lateness = int(rng.uniform(15, 120) + (900 if rng.random() < 0.05 else 0))
                duration = int(rng.gauss(1800, 350)) if status != "timed_out" else 30_000
                run = replace(run, started_at=slot + timedelta(milliseconds=lateness), lateness_ms=lateness,
                              duration_ms=duration, finished_at=slot + timedelta(milliseconds=lateness + duration),
                              worker="vm:2259", attempt=1,
                              error=RunError("RuntimeError", "upstream answered 502") if status == "failed" else None)
            runs.append(run)
        store.runs.insert_many([run_to_doc(run) for run in runs])
        newest = runs[0]
        store.record_job_outcome(job_id, newest.run_id, newest.status, newest.duration_ms, None, job.incarnation)
    finally:
        client.close()


def test_screenshots_for_the_readme(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    rng = random.Random(11)
    created = [stack.create_job(name=name, schedule=schedule, timezone=zone, handler=handler, args=args,
                                max_retries=1) for name, schedule, zone, handler, args in JOBS]
    stack.api("PUT", f"/jobs/{created[3]['job_id']}", {"enabled": False})
    for job in created[:6]:
        history(stack, job["job_id"], rng.randint(20, 60), rng, timedelta(minutes=rng.choice([20, 25, 30, 40])))
    client, db = stack.db()
    try:  # the history was written after those hours were counted (as no real run ever is): count them again
        db["run_stats_hourly"].delete_many({})
    finally:
        client.close()
    page.goto(f"{stack.url}/ui/")
    expect(page.locator('[data-live-part="tiles"] .tile').nth(0)).to_contain_text("term", timeout=30_000)
    page.wait_for_timeout(1500)  # the chart drawn
    screenshot(page, "docs-overview")
    page.goto(f"{stack.url}/ui/jobs/{created[0]['job_id']}")
    expect(page.locator("#slot-strip a")).not_to_have_count(0)
    page.wait_for_timeout(1500)
    screenshot(page, "docs-job")
