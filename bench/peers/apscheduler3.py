"""Harness side of the apscheduler3 peer: one process, BackgroundScheduler + MongoDBJobStore.

APScheduler 3 has no workers: jobs run in the scheduler's process, on a
ThreadPoolExecutor of processes × threads (16) threads. Its job store is a
MongoDB collection on the same MongoDB-wire store cronhive uses (its own
database, dropped afterwards). See bench/peers/apscheduler_app.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.herd import HerdPlan, HerdSystem, Ready, run_herd
from bench.procs import ProcessGroup
from bench.profiles import Profile
from bench.recorder import READY_MARKER
from bench.services import Services


class APScheduler3(HerdSystem):
    name = "apscheduler3"

    @property
    def database(self) -> str:
        return f"cronhive_bench_{self.tag}_apscheduler"

    def setup(self) -> str:
        return (f"BackgroundScheduler + MongoDBJobStore + ThreadPoolExecutor({self.profile.apscheduler_threads}), "
                f"{self.profile.herd_jobs} CronTrigger jobs, in-process; misfire_grace_time=None, coalesce=True")

    def start(self, group: ProcessGroup, plan: HerdPlan, env: dict[str, str], directory: Path) -> list[Ready]:
        env = {**env, "BENCH_MONGODB_URI": self.services.mongodb_uri, "BENCH_MONGODB_DB": self.database,
               "BENCH_THREADS": str(self.profile.apscheduler_threads)}
        process = group.start(
            "apscheduler", [str(self.services.peers_python), "-m", "bench.peers.apscheduler_app"],
            env=env, cwd=self.services.repo_root, log_path=directory / "apscheduler.log")
        return [Ready(process, READY_MARKER)]

    def cleanup(self) -> None:
        self.services.drop_database(self.database)

    def extra(self, directory: Path) -> dict[str, Any]:
        """``missed``: runs APScheduler dropped as misfired (its app prints ``BENCH-MISSED <n>`` at exit)."""
        found = re.findall(r"BENCH-MISSED (\d+)", (directory / "apscheduler.log").read_text(errors="replace"))
        return {"missed": int(found[-1])} if found else {}


def run(profile: Profile, services: Services) -> dict[str, Any]:
    return run_herd(APScheduler3(profile, services))
