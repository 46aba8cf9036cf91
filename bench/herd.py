"""The herd scenario's shared parts: one slot, N jobs, start records, the summary.

Every system (cronhive and each peer) runs the same herd: N jobs whose cron
expression is ``"M H * * *"`` for the minute ``H:M`` (UTC) of the slot — the
first minute boundary at least ``profile.herd_setup_s`` after the system's
processes are started. A minute-resolution, fixed-time expression is one every
peer can write (Celery ``crontab(minute=M, hour=H)``, periodiq ``cron("M H * * *")``,
APScheduler ``CronTrigger(minute=M, hour=H)``) and it fires exactly once in the
run, so every start recorded belongs to that slot: nothing fires at start-up
(periodiq fires "every minute" actors as soon as it starts) and no next-minute
fire can mix into a system that is still working through its herd.

Each job's handler calls `bench.recorder.record_start(job)`. Per system:

- ``start_lateness_ms`` {p50, p99, max}: handler start − slot instant, over the
  jobs that started (first start of each job);
- ``all_started_s``: from the slot until the N-th job started (null when not all did);
- ``incomplete``: true when fewer than N started within ``profile.herd_bound_s``;
- ``duplicates``: handler starts beyond the first of a job (should be 0);
- ``early``: jobs whose handler started before the slot instant (should be 0).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procs import Managed, ProcessGroup
from bench.profiles import Profile
from bench.recorder import StartsReader
from bench.services import Services
from bench.stats import summary_ms


class SystemFailed(Exception):
    """A system under test could not run the scenario (a process died, never got ready...)."""


@dataclass(frozen=True)
class HerdPlan:
    n: int
    #: the slot, epoch seconds of a minute boundary (UTC)
    slot: int
    #: how long after the slot the system may take to start all N
    bound_s: float

    @property
    def minute(self) -> int:
        return (self.slot // 60) % 60

    @property
    def hour(self) -> int:
        return (self.slot // 3600) % 24

    @property
    def cron(self) -> str:
        return f"{self.minute} {self.hour} * * *"

    @property
    def slot_iso(self) -> str:
        return datetime.fromtimestamp(self.slot, UTC).isoformat().replace("+00:00", "Z")

    def job_names(self) -> list[str]:
        return [job_name(index) for index in range(self.n)]

    def env(self) -> dict[str, str]:
        """What the peers' app modules read (``BENCH_*``) to build their N schedules."""
        return {"BENCH_N": str(self.n), "BENCH_MINUTE": str(self.minute), "BENCH_HOUR": str(self.hour),
                "BENCH_CRON": self.cron}


def job_name(index: int) -> str:
    return f"bench_job_{index:05d}"


def plan_herd(profile: Profile, now: float | None = None) -> HerdPlan:
    """The slot: the first minute boundary at least ``herd_setup_s`` from ``now``."""
    now = time.time() if now is None else now
    slot = math.ceil((now + profile.herd_setup_s) / 60) * 60
    return HerdPlan(n=profile.herd_jobs, slot=int(slot), bound_s=profile.herd_bound_s)


@dataclass(frozen=True)
class Ready:
    """A process is ready once ``marker`` appears ``count`` times in its output."""

    process: Managed
    marker: str
    count: int = 1

    def met(self) -> bool:
        return self.process.count(self.marker) >= self.count


def wait_ready(checks: Sequence[Ready], plan: HerdPlan, margin_s: float = 1.0) -> float:
    """Wait until every check is met; returns how many seconds before the slot that was.

    Raises `SystemFailed` when a process dies first or the slot (less ``margin_s``)
    comes before readiness: a system not ready at its slot would measure its start-up.
    """
    while True:
        for check in checks:
            if not check.process.alive():
                raise SystemFailed(f"{check.process.name} exited with code {check.process.popen.returncode} "
                                   f"before it was ready:\n{check.process.tail()}")
        if all(check.met() for check in checks):
            return round(plan.slot - time.time(), 2)
        if time.time() > plan.slot - margin_s:
            waiting = [check.process.name for check in checks if not check.met()]
            raise SystemFailed(f"not ready {margin_s} s before the slot: {', '.join(waiting)} "
                               f"(raise herd_setup_s in bench/profiles.py)")
        time.sleep(0.1)


def observe(plan: HerdPlan, record_dir: Path, group: ProcessGroup, poll_s: float = 0.2) -> dict[str, Any]:
    """Wait for the slot, then collect starts until all N started or ``bound_s`` passed."""
    reader = StartsReader(record_dir)
    first_start: dict[str, float] = {}
    duplicates = 0
    deadline = plan.slot + plan.bound_s
    time.sleep(max(0.0, plan.slot - time.time()))
    while True:
        for job, started_at in reader.read_new():
            if job in first_start:
                duplicates += 1
            else:
                first_start[job] = started_at
        if len(first_start) >= plan.n or time.time() > deadline:
            break
        if group.processes and not any(process.alive() for process in group.processes):
            break
        time.sleep(poll_s)
    return summarise(plan, first_start, duplicates, dead=[process.name for process in group.dead()])


def summarise(plan: HerdPlan, first_start: dict[str, float], duplicates: int, dead: Sequence[str] = ()) -> dict[str, Any]:
    lateness_ms = [(started_at - plan.slot) * 1000 for started_at in first_start.values()]
    complete = len(first_start) >= plan.n
    last = max(first_start.values(), default=None)
    result: dict[str, Any] = {
        "n": plan.n,
        "start_lateness_ms": summary_ms(lateness_ms),
        "all_started_s": round(last - plan.slot, 3) if complete and last is not None else None,
        "started": len(first_start),
        "incomplete": not complete,
        "duplicates": duplicates,
        "early": sum(1 for value in lateness_ms if value < 0),
        "slot": plan.slot_iso,
    }
    if not complete:
        result["bound_s"] = plan.bound_s
        result["last_started_s"] = round(last - plan.slot, 3) if last is not None else None
    if dead:
        result["exited_early"] = list(dead)
    return result


class HerdSystem(ABC):
    """How one system runs the herd: its processes, their readiness, its cleanup."""

    #: the system's row name in the table and key in ``peers``
    name: str

    def __init__(self, profile: Profile, services: Services) -> None:
        self.profile = profile
        self.services = services
        self.tag = services.new_tag()

    @abstractmethod
    def setup(self) -> str:
        """One line for the results: topology and anything set away from the defaults."""

    @abstractmethod
    def start(self, group: ProcessGroup, plan: HerdPlan, env: dict[str, str], directory: Path) -> list[Ready]:
        """Start the system's processes for ``plan``; return what tells they are ready."""

    @abstractmethod
    def cleanup(self) -> None:
        """Delete the queues, exchanges and databases the run used."""

    def extra(self, directory: Path) -> dict[str, Any]:
        """Anything the system reported that belongs in its result, read after its processes stopped."""
        return {}

    def before_slot(self, plan: HerdPlan) -> None:
        """Called once every process is ready, before the slot (to start counting)."""
        return None

    def after_herd(self, plan: HerdPlan) -> None:
        """Called after the herd was observed, while the processes still run."""
        return None


def run_herd(system: HerdSystem) -> dict[str, Any]:
    """Plan a slot, start the system, wait for readiness and the herd; always stop and clean up."""
    directory = system.services.scenario_dir(system.name)
    plan = plan_herd(system.profile)
    env = {**system.services.base_env(directory / "records"), **plan.env()}
    try:
        with ProcessGroup() as group:
            checks = system.start(group, plan, env, directory)
            ready_before_slot_s = wait_ready(checks, plan)
            system.before_slot(plan)
            result = observe(plan, directory / "records", group)
            system.after_herd(plan)
    finally:
        system.cleanup()
    result.update(system.extra(directory))
    result["ready_before_slot_s"] = ready_before_slot_s
    result["setup"] = system.setup()
    return result
