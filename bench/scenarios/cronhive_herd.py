"""cronhive's herd: N jobs due at one minute boundary, 2 worker processes × 8 threads.

The same herd as every peer's (`bench.herd`): N jobs ``bench_job_00000``… on the
fixed-minute expression ``"M H * * *"`` of the slot, handler ``bench_record``
(`bench.cronhive_handlers`: records its start exactly as the peers' handlers
do). The jobs are bulk-inserted in the document shape `MongoStore.create_job`
writes (into a database of the run's own), then cronhive runs as deployed: two
``python -m cronhive.scheduler`` (one leader, one standby) and one
``python -m cronhive.worker --processes 2 --threads 8``, every setting at the product's
default (overlap ``forbid``, ``SCHEDULER_BATCH`` 200, ``LOG_LEVEL`` INFO).

``mongo_ops_per_run`` (and ``mongo_docs_written_per_run``): the MongoDB commands
(documents written) of every cronhive process — both schedulers, every worker
process — from half a second before the slot until every run of the slot has its
outcome, ÷ the slot's runs (`bench.probe` in every process).

Besides what `bench.herd.run_herd` measures (handler start − slot),
``publish_lateness_ms`` is, per run, the instant RabbitMQ confirmed its publish
− its slot. The schedulers run with `bench.probe` (``bench/shim``), which notes
the instant pika's confirmed ``basic_publish`` returns, per run id; cronhive's
code is not touched. (The runs' own ``queued_at`` is reported beside it as
``queued_at_lateness_ms``: it is one instant per dispatched batch, its last
confirm, and stays null for runs a worker started before the scheduler marked
them ``queued`` — ``queued_at_missing``.) Read before the database is dropped.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench import probe
from bench.herd import HerdPlan, HerdSystem, Ready, run_herd
from bench.procs import ProcessGroup
from bench.profiles import Profile
from bench.scenarios.cronhive_cluster import CronhiveCluster, epoch
from bench.services import Services
from bench.stats import empty_summary, summary_ms

SCHEDULERS = 2
#: the MongoDB commands of the herd are counted from this long before the slot
COUNT_BEFORE_SLOT_S = 0.5
#: at most this long after the herd started for its runs' outcomes
OUTCOMES_WAIT_S = 30.0


class CronhiveHerd(HerdSystem):
    name = "cronhive"

    def __init__(self, profile: Profile, services: Services) -> None:
        super().__init__(profile, services)
        self.cluster = CronhiveCluster(services, "herd", tag=self.tag, dirname=self.name)
        self.plan: HerdPlan | None = None
        self.measured: dict[str, Any] = {}
        self.window: probe.ProbeWindow | None = None
        self.opener: threading.Timer | None = None

    def setup(self) -> str:
        return (f"{SCHEDULERS} × python -m cronhive.scheduler (leader + standby) + python -m cronhive.worker --processes "
                f"{self.profile.worker_processes} --threads {self.profile.worker_threads}; product defaults "
                f"(overlap forbid, SCHEDULER_BATCH 200, LOG_LEVEL INFO); jobs bulk-inserted")

    def start(self, group: ProcessGroup, plan: HerdPlan, env: dict[str, str], directory: Path) -> list[Ready]:
        self.plan = plan
        self.cluster.load_jobs({"name": name, "job_id": name,
                                "schedule": plan.cron, "handler": "bench_record"} for name in plan.job_names())
        scheduler_env = self.cluster.env(probe=True)  # records each publish's confirm instant
        schedulers = [self.cluster.start_scheduler(group, scheduler_env) for _ in range(SCHEDULERS)]
        workers = self.cluster.start_workers(group, self.cluster.env(probe=True), self.profile.worker_processes,
                                             self.profile.worker_threads)
        return self.cluster.ready_checks(schedulers, workers, self.profile.worker_processes)

    def before_slot(self, plan: HerdPlan) -> None:
        self.window = probe.ProbeWindow(self.cluster.probe_dir)
        self.opener = threading.Timer(max(0.0, plan.slot - COUNT_BEFORE_SLOT_S - time.time()), self.window.open)
        self.opener.start()

    def after_herd(self, plan: HerdPlan) -> None:
        """Wait until the slot's runs all have their outcome, then close the count."""
        if self.window is None or self.opener is None:
            return
        self.opener.join()
        deadline = time.time() + OUTCOMES_WAIT_S
        client = self.cluster.client()
        try:
            runs = client[self.cluster.database]["runs"]
            while time.time() < deadline and runs.count_documents(
                    {"status": {"$in": ["pending", "queued", "running"]}}) > 0:
                time.sleep(0.2)
            finished = runs.count_documents({"trigger": "schedule", "status": {"$nin": ["pending", "queued", "running"]}})
        finally:
            client.close()
        time.sleep(probe.DUMP_S + 0.2)  # the probes' dumps that cover the last outcome
        self.window.close()
        commands = sum(sum(counted.values()) for counted, _ in self.window.deltas().values())
        written = sum(self.window.docs_written().values())
        self.measured["mongo_ops_per_run"] = round(commands / finished, 2) if finished else None
        self.measured["mongo_docs_written_per_run"] = round(written / finished, 2) if finished else None
        self.measured["mongo_ops_runs_counted"] = finished

    def cleanup(self) -> None:
        try:
            self.measured.update(self.publish_lateness())
        finally:
            self.cluster.cleanup()

    def publish_lateness(self) -> dict[str, Any]:
        """Publish confirm − slot of the slot's runs, and what the runs collection says."""
        if self.plan is None:
            return {}
        confirmed = probe.read_publishes(self.cluster.probe_dir)
        client = self.cluster.client()
        try:
            runs = list(client[self.cluster.database]["runs"].find(
                {"trigger": "schedule"}, {"scheduled_for": 1, "queued_at": 1, "status": 1}))
        finally:
            client.close()
        lateness = [(confirmed[run["_id"]] - epoch(run["scheduled_for"])) * 1000
                    for run in runs if run["_id"] in confirmed]
        queued_at = [(epoch(run["queued_at"]) - epoch(run["scheduled_for"])) * 1000
                     for run in runs if run.get("queued_at") is not None]
        statuses: dict[str, int] = {}
        for run in runs:
            statuses[run["status"]] = statuses.get(run["status"], 0) + 1
        return {"publish_lateness_ms": summary_ms(lateness), "runs": len(runs), "published": len(lateness),
                "queued_at_lateness_ms": summary_ms(queued_at), "queued_at_missing": len(runs) - len(queued_at),
                "run_statuses": statuses}

    def extra(self, directory: Path) -> dict[str, Any]:
        return self.measured


def run(profile: Profile, services: Services) -> dict[str, Any]:
    result = run_herd(CronhiveHerd(profile, services))
    result.setdefault("publish_lateness_ms", empty_summary())
    ordered = {key: result.pop(key) for key in ("n", "publish_lateness_ms", "start_lateness_ms", "all_started_s",
                                                "mongo_ops_per_run") if key in result}
    return {**ordered, **result}
