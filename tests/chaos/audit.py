"""The one checker every chaos scenario ends with: what the run records, the
handlers' own execution records and the API's answers say about the guarantees.

* every slot of a watched job in the window has exactly one run record
  (``fire_all``: all of them; ``fire_once``/``skip``: all outside fault windows,
  missed ones inside may be coalesced — never two);
* every ``fire_all`` slot was executed (its handler ran to its end and the run
  ``succeeded``);
* no two executions of one run overlap, and under ``forbid`` no two runs of one
  job overlap, by more than `OVERLAP_BOUND_S` (the documented bound for a paused
  holder: it notices its lost lease when it runs again);
* no run is left ``running`` without a live lease; every job lease is free once
  the cluster drained;
* the API never answered outside its contract: every answer in the one JSON
  shape, no 5xx but 503 (a dependency down, inside a fault window) — never 500.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cronhive import cron
from cronhive.domain import utcnow
from cronhive.store import MongoStore
from tests.chaos.harness import Answer, Fault

#: How long two executions that must exclude each other may overlap (a holder
#: paused past its lease runs on until it next checks, ~0.1 s after it resumes).
OVERLAP_BOUND_S = 0.5
#: A fault's window for the audit extends this far either side (detection, catch-up).
FAULT_SLACK = timedelta(seconds=8)


@dataclass(frozen=True)
class Watched:
    job_id: str
    schedule: str
    misfire_policy: str
    overlap_policy: str
    timezone: str = "UTC"


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    slots: int = 0
    executed: int = 0
    answers: int = 0
    statuses: dict[int | None, int] = field(default_factory=dict)

    def add(self, problem: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(problem)


def execution_events(exec_dir: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted(exec_dir.glob("exec-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


@dataclass(frozen=True)
class Execution:
    run_id: str
    job_id: str
    attempt: int
    pid: int
    start: float
    end: float | None


def executions(exec_dir: Path) -> list[Execution]:
    """Start/end pairs by (run, attempt, pid); an execution whose process died has no end."""
    starts: dict[tuple[str, int, int], dict[str, Any]] = {}
    ends: dict[tuple[str, int, int], float] = {}
    for event in execution_events(exec_dir):
        key = (event["run_id"], event["attempt"], event["pid"])
        if event["event"] == "start":
            starts[key] = event
        elif event["event"] == "end":
            ends[key] = event["at"]
    return [Execution(run_id, start["job_id"], attempt, pid, start["at"], ends.get((run_id, attempt, pid)))
            for (run_id, attempt, pid), start in starts.items()]


def in_fault(at: datetime, faults: list[Fault]) -> bool:
    return any(f.start - FAULT_SLACK <= at <= (f.end or utcnow()) + FAULT_SLACK for f in faults)


def check_slots(store: MongoStore, watched: list[Watched], start: datetime, end: datetime, faults: list[Fault],
                executed_runs: set[str], report: Report) -> None:
    for job in watched:
        expected = cron.fires_between(job.schedule, job.timezone, start, end, 100_000)
        runs: dict[datetime, list[dict[str, Any]]] = defaultdict(list)
        for run in store.runs.find({"job_id": job.job_id, "trigger": "schedule",
                                    "scheduled_for": {"$gt": start, "$lte": end}}):
            runs[run["scheduled_for"]].append(run)
        report.slots += len(expected)
        for slot in expected:
            found = runs.get(slot, [])
            if len(found) > 1:
                report.add(f"{job.job_id} {slot:%H:%M:%S}: {len(found)} run records")
            if not found:
                if job.misfire_policy == "fire_all" or not in_fault(slot, faults):
                    report.add(f"{job.job_id} {slot:%H:%M:%S}: no run record ({job.misfire_policy})")
                continue
            run = found[0]
            if job.misfire_policy == "fire_all":
                if run["status"] != "succeeded" or run["_id"] not in executed_runs:
                    report.add(f"{job.job_id} {slot:%H:%M:%S}: fire_all slot not executed "
                               f"(status {run['status']}, error {run.get('error')})")
                else:
                    report.executed += 1
        unexpected = set(runs) - set(expected)
        if unexpected:
            report.add(f"{job.job_id}: runs for instants that are not slots: {sorted(unexpected)[:3]}")


def _overlap(a: Execution, b: Execution, open_end_s: float) -> float:
    a_end = a.end if a.end is not None else a.start + open_end_s
    b_end = b.end if b.end is not None else b.start + open_end_s
    return min(a_end, b_end) - max(a.start, b.start)


def check_exclusion(found: list[Execution], forbid_jobs: set[str], open_end_s: float, report: Report) -> None:
    by_run: dict[str, list[Execution]] = defaultdict(list)
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for execution in found:
        by_run[execution.run_id].append(execution)
        if execution.job_id in forbid_jobs:
            by_job[execution.job_id].append(execution)
    for group, what in ((by_run, "attempts of run"), (by_job, "runs of forbid job")):
        for key, items in group.items():
            items.sort(key=lambda e: e.start)
            for index, first in enumerate(items):
                for second in items[index + 1:]:
                    if second.start > (first.end or first.start + open_end_s):
                        break
                    overlap = _overlap(first, second, open_end_s)
                    if overlap > OVERLAP_BOUND_S:
                        report.add(f"{what} {key}: {first.run_id}#{first.attempt} and {second.run_id}#{second.attempt}"
                                   f" overlapped {overlap:.2f} s")


def check_leases(store: MongoStore, report: Report, *, drained: bool) -> None:
    now = utcnow()
    for run in store.runs.find({"status": "running"}):
        owner = store.runs.find_one({"_id": run["_id"]}) if run.get("lease_scope") == "run" \
            else store.jobs.find_one({"_id": run["job_id"]})
        lease = (owner or {}).get("lease") or {}
        live = (lease.get("holder") == run.get("lease_holder") and lease.get("token") == run.get("lease_token")
                and lease.get("expires_at") is not None and lease["expires_at"] > now)
        if not live:
            report.add(f"run {run['_id']} is running without a live lease")
    if drained:
        for job in store.jobs.find({"lease": {"$ne": None}}, {"lease": 1}):
            if job["lease"].get("expires_at") and job["lease"]["expires_at"] > now:
                report.add(f"job {job['_id']}: lease still held by {job['lease'].get('holder')} after draining")


def check_answers(answers: list[Answer], faults: list[Fault], report: Report) -> None:
    report.answers = len(answers)
    for answer in answers:
        report.statuses[answer.status] = report.statuses.get(answer.status, 0) + 1
        if answer.status is None:
            if not in_fault(answer.at, faults):
                report.add(f"API {answer.method} {answer.path}: no answer ({answer.error})")
            continue
        if not answer.shaped:
            report.add(f"API {answer.method} {answer.path}: {answer.status} not in the JSON shape")
        if answer.status >= 500 and not (answer.status == 503 and in_fault(answer.at, faults)):
            report.add(f"API {answer.method} {answer.path}: {answer.status} at {answer.at:%H:%M:%S.%f}")


def audit(store: MongoStore, exec_dir: Path, watched: list[Watched], start: datetime, end: datetime,
          faults: list[Fault], answers: list[Answer], *, handler_seconds: float, drained: bool = True) -> Report:
    """Every check above; ``[start, end]`` is the window of slots audited (UTC)."""
    report = Report()
    found = executions(exec_dir)
    finished = {e.run_id for e in found if e.end is not None}
    check_slots(store, watched, start.astimezone(UTC), end.astimezone(UTC), faults, finished, report)
    forbid = {job.job_id for job in watched if job.overlap_policy == "forbid"}
    check_exclusion(found, forbid, handler_seconds + 0.5, report)
    check_leases(store, report, drained=drained)
    check_answers(answers, faults, report)
    return report


def wait_drained(store: MongoStore, timeout_s: float) -> bool:
    """Until no run is pending, queued or running (the scheduler stopped first)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if store.runs.count_documents({"status": {"$in": ["pending", "queued", "running"]}}) == 0:
                return True
        except Exception:
            pass
        time.sleep(0.5)
    return False


def slot_window(after: datetime, seconds: float) -> tuple[datetime, datetime]:
    return after, after + timedelta(seconds=seconds)
