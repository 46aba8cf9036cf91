"""``python -m cronhive.scheduler`` as an OS process: start-up failures, SIGTERM hand-over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronhive.domain import utcnow
from cronhive.settings import Settings
from cronhive.store import SCHEDULERS, MongoStore
from tests.scheduler.cluster import ROOT, Cluster


@pytest.fixture
def cluster(settings: Settings, store: MongoStore, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(settings, store, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def run_scheduler(env: dict[str, str], timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("MONGODB_", "RABBITMQ_"))}
    return subprocess.run([sys.executable, "-m", "cronhive.scheduler"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**base, "PYTHONPATH": str(ROOT), "METRICS_PORT": "0", **env})


def test_unreachable_mongodb_at_start_is_one_line_naming_the_url_and_exit_1(rabbitmq_url: str) -> None:
    done = run_scheduler({"MONGODB_URI": "mongodb://cron:s3cret@127.0.0.1:1/", "MONGODB_TIMEOUT_MS": "300",
                          "RABBITMQ_URL": rabbitmq_url})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    event = json.loads(lines[0])
    assert event["level"] == "error"
    assert "MongoDB is unreachable at mongodb://cron:***@127.0.0.1:1/" in event["event"]
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


def test_unreachable_rabbitmq_at_start_is_one_line_naming_the_url_and_exit_1(settings: Settings) -> None:
    done = run_scheduler({"MONGODB_URI": settings.mongodb_uri, "MONGODB_DB": settings.mongodb_db,
                          "RABBITMQ_URL": "amqp://guest:s3cret@127.0.0.1:1/%2F"})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "RabbitMQ is unreachable at amqp://guest:***@127.0.0.1:1/%2F" in json.loads(lines[0])["event"]
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


def test_invalid_settings_exit_2_with_one_line() -> None:
    done = run_scheduler({"LEADER_LEASE_S": "1"})
    assert done.returncode == 2
    assert done.stderr.strip() == "cronhive scheduler: LEADER_LEASE_S must be >= 3, got 1"


def test_sigterm_releases_the_lease_and_a_standby_takes_over_at_once(cluster: Cluster, store: MongoStore) -> None:
    cluster.start(2)
    leader, lease = cluster.wait_for_leader()
    deadline = time.monotonic() + 10
    while len(store.scheduler_status(utcnow()).view()["standbys"]) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = store.scheduler_status(utcnow()).view()
    assert status["holder"] == lease["holder"] and status["pid"] == leader and len(status["standbys"]) == 1
    process = cluster.by_pid(leader).process
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    stopped = utcnow()
    assert cluster.lease() is None or cluster.lease()["holder"] != lease["holder"]  # released, not left to expire
    assert store.db[SCHEDULERS].find_one({"_id": lease["holder"]}) is None
    _, new_lease = cluster.wait_for_leader(other_than=leader)
    # released: the standby's next attempt (one renew interval at most) wins, well before expiry
    assert new_lease["expires_at"] - lease["expires_at"] < new_lease["expires_at"] - stopped
    assert new_lease["token"] > lease["token"]
    events = [event["event"] for event in cluster.by_pid(leader).events()]
    assert "released the leader lease" in events and events[-1] == "scheduler stopped"
