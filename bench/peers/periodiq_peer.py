"""Harness side of the periodiq peer: ``periodiq`` + ``dramatiq --processes 2 --threads 8``.

periodiq is Dramatiq's periodic scheduler: one process sends every due periodic
actor's message at the minute; dramatiq workers run them. N jobs are N generated
actors (bench/peers/periodiq_app.py). Same RabbitMQ, same dramatiq version as
cronhive, dramatiq's and periodiq's default log level (INFO).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.herd import HerdPlan, HerdSystem, Ready, run_herd
from bench.procs import ProcessGroup
from bench.profiles import Profile
from bench.services import Services

APP = "bench.peers.periodiq_app"
#: PeriodiqMiddleware's skip_delay: the workers drop messages older than this (periodiq's default: 30 s)
SKIP_DELAY_S = 600


class Periodiq(HerdSystem):
    name = "periodiq"

    @property
    def queue(self) -> str:
        return f"cronhive.bench.{self.tag}.periodiq"

    def setup(self) -> str:
        return (f"periodiq ({self.profile.herd_jobs} periodic actors) + dramatiq --processes "
                f"{self.profile.worker_processes} --threads {self.profile.worker_threads}; "
                f"PeriodiqMiddleware(skip_delay={SKIP_DELAY_S})")

    def start(self, group: ProcessGroup, plan: HerdPlan, env: dict[str, str], directory: Path) -> list[Ready]:
        env = {**env, "BENCH_QUEUE": self.queue, "BENCH_RABBITMQ_URL": self.services.rabbitmq_url,
               "BENCH_SKIP_DELAY_S": str(SKIP_DELAY_S)}
        workers = group.start(
            "dramatiq-workers",
            [self.services.peers_bin("dramatiq"), APP, "--processes", str(self.profile.worker_processes),
             "--threads", str(self.profile.worker_threads), "--queues", self.queue],
            env=env, cwd=self.services.repo_root, log_path=directory / "workers.log")
        scheduler = group.start(
            "periodiq", [self.services.peers_bin("periodiq"), APP],
            env=env, cwd=self.services.repo_root, log_path=directory / "periodiq.log")
        return [Ready(workers, "Worker process is ready for action.", self.profile.worker_processes),
                Ready(scheduler, "Registered periodic actors")]

    def cleanup(self) -> None:
        self.services.delete_queues(self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ")


def run(profile: Profile, services: Services) -> dict[str, Any]:
    return run_herd(Periodiq(profile, services))
