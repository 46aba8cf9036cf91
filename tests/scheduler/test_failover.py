"""System tests with real scheduler processes that really die (SPEC §4–§5, issue 3):
SIGKILL of the leader, a SIGSTOPped leader resumed after a takeover, RabbitMQ stopped
and started, MongoDB stopped and started. Runs are read from MongoDB and messages
straight from RabbitMQ (no workers)."""

from __future__ import annotations

import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cronhive.domain import utcnow
from cronhive.scheduler.dispatcher import QUEUED_MARK_DELAY_S
from cronhive.settings import Settings
from cronhive.store import MongoStore
from tests import services
from tests.scheduler.cluster import (
    Cluster,
    create_jobs,
    drain,
    second,
    sleep_until_half_second,
    slot_gaps,
    wait_until_caught_up,
)

pytestmark = pytest.mark.slow

LEASE = timedelta(seconds=3)  # LEADER_LEASE_S of the cluster
RENEW = LEASE / 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[services.SecantusServer]:
    """A MongoDB-wire server of this test's own: it can be stopped and started, and is
    thrown away whole at the end (dropping thousands of runs one by one takes long)."""
    server = services.SecantusServer(data_dir=str(tmp_path / "mongodb")).start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture
def settings(server: services.SecantusServer, rabbitmq_url: str) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings.from_env({"MONGODB_URI": server.uri, "MONGODB_DB": "cronhive", "RABBITMQ_URL": rabbitmq_url,
                                  "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "MONGODB_TIMEOUT_MS": "1000"})
    yield settings
    services.delete_queues(rabbitmq_url, settings.runs_queue, f"{settings.runs_queue}.DQ",
                           f"{settings.runs_queue}.XQ")


@pytest.fixture
def store(settings: Settings) -> Iterator[MongoStore]:
    store = MongoStore.open(settings)
    store.ensure_indexes()
    yield store
    store.close()


@pytest.fixture
def cluster(settings: Settings, store: MongoStore, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(settings, store, tmp_path, env_extra={"MONGODB_TIMEOUT_MS": "1000"})
    try:
        yield cluster
    finally:
        cluster.stop()


def first_common_slot(store: MongoStore, job_ids: list[str]) -> datetime:
    return max(job["next_fire_at"] for job in store.jobs.find({"_id": {"$in": job_ids}}, {"next_fire_at": 1}))


def assert_every_run_published_once(store: MongoStore, settings: Settings, allow_repeats: bool = False) -> set[str]:
    """Every run is ``queued`` and has a message; returns the runs that had more than one."""
    counts = drain(settings.rabbitmq_url, settings.runs_queue)
    runs = {run["_id"]: run["status"] for run in store.runs.find({}, {"status": 1})}
    assert set(runs.values()) == {"queued"}
    assert set(counts) == set(runs), "a message for an unknown run, or a run without a message"
    repeated = {run_id for run_id, count in counts.items() if count > 1}
    if not allow_repeats:
        assert not repeated, {run_id: counts[run_id] for run_id in repeated}
    return repeated


def test_three_schedulers_200_jobs_every_second_leader_sigkilled_twice(
        cluster: Cluster, store: MongoStore, settings: Settings) -> None:
    job_ids = create_jobs(store, 200, "kill", misfire_policy="fire_all", overlap_policy="allow")
    start = first_common_slot(store, job_ids)
    cluster.start(3)
    leader, lease = cluster.wait_for_leader()
    takeovers = []
    for _ in range(2):
        time.sleep(6)
        victim = cluster.by_pid(leader).process
        victim.send_signal(signal.SIGKILL)
        killed_at = utcnow()
        victim.wait()
        dead = cluster.lease()
        assert dead is not None and dead["holder"].endswith(f":{leader}")
        leader, lease = cluster.wait_for_leader(other_than=leader)
        claimed_at = lease["expires_at"] - LEASE
        takeovers.append((claimed_at - killed_at).total_seconds())
        assert lease["token"] > dead["token"]
        # the standby claimed within one renew interval of the dead leader's expiry
        assert claimed_at <= dead["expires_at"] + RENEW
        assert claimed_at - killed_at <= LEASE + RENEW
    time.sleep(6)
    end = second(utcnow()) - timedelta(seconds=1)
    wait_until_caught_up(store, job_ids, end, timeout_s=60)
    cluster.stop()

    window = int((end - start).total_seconds()) + 1
    print(f"\ntakeover after SIGKILL (kill -> new lease claimed): {', '.join(f'{t:.2f} s' for t in takeovers)}"
          f" (lease {LEASE.total_seconds():g} s, renew {RENEW.total_seconds():g} s); "
          f"{window} slots x {len(job_ids)} jobs checked")
    assert slot_gaps(store, job_ids, start, end) == {}  # fire_all: none lost; one run per slot (unique index)
    assert store.runs.count_documents({"status": {"$ne": "queued"}}) == 0
    repeated = assert_every_run_published_once(store, settings, allow_repeats=True)
    # a leader killed leaves the runs it confirmed in its last QUEUED_MARK_DELAY_S unmarked (and
    # those of a batch in flight): a successor publishes them again (workers run a run once)
    print(f"runs published again after a SIGKILL (confirmed, not yet marked queued): {len(repeated)}")
    assert len(repeated) <= 2 * len(job_ids) * (QUEUED_MARK_DELAY_S + 2)


def test_a_sigstopped_leader_resumed_after_a_takeover_publishes_and_writes_nothing(
        cluster: Cluster, store: MongoStore, settings: Settings) -> None:
    job_ids = create_jobs(store, 20, "pause", misfire_policy="fire_all", overlap_policy="allow")
    start = first_common_slot(store, job_ids)
    cluster.start(2)
    old_pid, old_lease = cluster.wait_for_leader()
    time.sleep(2)
    sleep_until_half_second()  # between two dispatches, as a GC pause or a SIGSTOP would usually find it
    paused = cluster.by_pid(old_pid)
    paused.process.send_signal(signal.SIGSTOP)
    stopped_at = utcnow()
    new_pid, new_lease = cluster.wait_for_leader(other_than=old_pid)
    assert new_lease["token"] > old_lease["token"]
    time.sleep(1.5)
    paused.process.send_signal(signal.SIGCONT)
    resumed_at = utcnow()
    time.sleep(3)
    end = second(utcnow()) - timedelta(seconds=1)
    wait_until_caught_up(store, job_ids, end)
    status = store.scheduler_status(utcnow()).view()
    assert status["pid"] == new_pid and paused.process.poll() is None
    assert f"{old_lease['holder']}" in status["standbys"]
    cluster.stop()

    old_term, new_term = old_lease["token"], new_lease["token"]
    print(f"\npaused leader term {old_term} (stopped {stopped_at:%S.%f}, resumed {resumed_at:%S.%f}), "
          f"new leader term {new_term}")
    late_runs = store.runs.count_documents({"sched_term": old_term, "$or": [
        {"created_at": {"$gte": stopped_at}}, {"queued_at": {"$gte": stopped_at}}]})
    assert late_runs == 0  # nothing written by the old term after the pause
    assert store.runs.count_documents({"sched_term": {"$gt": new_term}}) == 0
    assert store.jobs.count_documents({"_id": {"$in": job_ids}, "sched_term": {"$ne": new_term}}) == 0
    assert slot_gaps(store, job_ids, start, end) == {}
    # the resumed one published nothing again; the new leader published again only what the paused
    # one had confirmed in its last QUEUED_MARK_DELAY_S and not marked yet (workers run a run once)
    repeated = assert_every_run_published_once(store, settings, allow_repeats=True)
    slots = {run["_id"]: run["scheduled_for"] for run in store.runs.find({"_id": {"$in": sorted(repeated)}})}
    assert all(stopped_at - timedelta(seconds=QUEUED_MARK_DELAY_S + 2) <= slot <= stopped_at
               for slot in slots.values()), slots
    print(f"runs the paused leader had confirmed, published again by the new one: {len(repeated)}")
    events = [event.get("event", "") for event in paused.events()]
    assert events.count("became the leader") == 1
    assert any(event.startswith("stepping down") for event in events)


rabbitmqctl = services.rabbitmqctl


def test_rabbitmq_stopped_and_started_loses_no_slot_and_publishes_again_only_the_runs_in_flight(
        cluster: Cluster, store: MongoStore, settings: Settings) -> None:
    job_ids = create_jobs(store, 10, "mq", misfire_policy="fire_all", overlap_policy="allow")
    start = first_common_slot(store, job_ids)
    cluster.start(2)
    leader, _ = cluster.wait_for_leader()
    time.sleep(2)
    sleep_until_half_second()
    try:
        rabbitmqctl("stop_app")
        time.sleep(2)
    finally:
        rabbitmqctl("start_app")  # always: the machine's RabbitMQ is shared
        services.check_rabbitmq(settings.rabbitmq_url)
    end = second(utcnow())
    wait_until_caught_up(store, job_ids, end, timeout_s=30)
    cluster.stop()

    assert slot_gaps(store, job_ids, start, end) == {}
    # Publishing pipelines confirms, a chunk in flight at a time (here one slot's runs):
    # when RabbitMQ stops (with its management plugin, stopping takes seconds and can
    # span a slot), the runs in flight may have been stored without their confirms
    # reaching us; they stay `pending` and are published again (workers run a run once
    # however often it is delivered: tests/worker). Nothing else repeats.
    repeated = assert_every_run_published_once(store, settings, allow_repeats=True)
    print(f"\nruns published again (in flight when RabbitMQ stopped): {len(repeated)}")
    assert len(repeated) <= len(job_ids)
    events = cluster.by_pid(leader).events()
    outage = [e for e in events if "RabbitMQ is unreachable" in e.get("event", "")]
    assert len(outage) == 1 and outage[0]["level"] == "error"  # one clear line
    assert any(e.get("event") == "RabbitMQ is reachable again" for e in events)
    assert not any("exc" in e or "raw" in e for e in events), "no traceback"


def test_mongodb_stopped_and_started_is_logged_once_and_caught_up_per_misfire_policy(
        cluster: Cluster, store: MongoStore, settings: Settings, server: services.SecantusServer) -> None:
    every = create_jobs(store, 1, "all", misfire_policy="fire_all", overlap_policy="allow")
    once = create_jobs(store, 1, "once", overlap_policy="allow")  # fire_once
    start = first_common_slot(store, every + once)
    cluster.start(1)
    cluster.wait_for_leader()
    time.sleep(2)
    server.stop()
    down_at = utcnow()
    time.sleep(6)  # longer than the lookahead (3 s): the slots planned before the outage are committed
    server.start()
    up_at = utcnow()
    end = second(utcnow()) + timedelta(seconds=2)
    wait_until_caught_up(store, every + once, end, timeout_s=30)
    cluster.stop()

    assert slot_gaps(store, every, start, end) == {}  # fire_all: every missed slot ran
    (missing,) = slot_gaps(store, once, start, end).values()  # fire_once: coalesced into one run
    assert len(missing) >= 2
    assert all(down_at - timedelta(seconds=1) <= at <= up_at + timedelta(seconds=3) for at in missing)
    assert store.runs.count_documents({"status": {"$ne": "queued"}}) == 0
    assert_every_run_published_once(store, settings)
    events = cluster.processes[0].events()
    assert len([e for e in events if "MongoDB is unreachable" in e.get("event", "")]) == 1
    assert len([e for e in events if e.get("event") == "MongoDB is reachable again"]) == 1
    assert not any("exc" in e or "raw" in e for e in events), "no traceback"
