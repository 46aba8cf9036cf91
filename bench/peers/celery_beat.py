"""Harness side of the celery-beat peer: ``celery beat`` + 2 ``celery worker`` × 8 threads.

Celery's closest match to "2 processes × 8 threads" is two worker instances with
the threads pool (``--pool threads --concurrency 8``), each its own process; beat
holds the N crontab entries (bench/peers/celery_app.py). Same RabbitMQ; log level
WARNING (Celery's default); Celery's defaults otherwise (prefetch multiplier 4,
mingle and gossip on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.herd import HerdPlan, HerdSystem, Ready, run_herd
from bench.procs import ProcessGroup
from bench.profiles import Profile
from bench.recorder import READY_MARKER
from bench.services import Services

APP = "bench.peers.celery_app"


class CeleryBeat(HerdSystem):
    name = "celery-beat"

    @property
    def queue(self) -> str:
        return f"cronhive.bench.{self.tag}.celery"

    def setup(self) -> str:
        return (f"celery beat (PersistentScheduler, {self.profile.herd_jobs} crontab entries) + "
                f"{self.profile.worker_processes} celery workers --pool threads --concurrency {self.profile.worker_threads}")

    def start(self, group: ProcessGroup, plan: HerdPlan, env: dict[str, str], directory: Path) -> list[Ready]:
        celery = self.services.peers_bin("celery")
        env = {**env, "BENCH_QUEUE": self.queue, "BENCH_RABBITMQ_URL": self.services.rabbitmq_url}
        checks = []
        for index in range(1, self.profile.worker_processes + 1):
            worker = group.start(
                f"celery-worker-{index}",
                [celery, "-A", APP, "worker", "--pool", "threads", "--concurrency", str(self.profile.worker_threads),
                 "--hostname", f"bench{index}.{self.tag}@%h", "--loglevel", "WARNING"],
                env=env, cwd=self.services.repo_root, log_path=directory / f"worker-{index}.log")
            checks.append(Ready(worker, READY_MARKER))
        beat = group.start(
            "celery-beat",
            [celery, "-A", APP, "beat", "--schedule", str(directory / "beat-schedule"), "--loglevel", "WARNING"],
            env=env, cwd=self.services.repo_root, log_path=directory / "beat.log")
        checks.append(Ready(beat, READY_MARKER))
        return checks

    def cleanup(self) -> None:
        self.services.delete_queues(self.queue)
        self.services.delete_exchanges(self.queue, f"{self.queue}.control.pidbox",
                                       f"reply.{self.queue}.control.pidbox", f"{self.queue}.events")


def run(profile: Profile, services: Services) -> dict[str, Any]:
    return run_herd(CeleryBeat(profile, services))
