"""Four real worker processes (``python -m cronhive.worker``, each its own dramatiq process
tree) on the real RabbitMQ and MongoDB-wire store, with JOB_LEASE_S=3: duplicate
deliveries, SIGKILL and SIGSTOP mid-run, long handlers, overlap, timeouts,
retries and dead-lettering (issue 4's tests). Runs are created the way the run
lifecycle contract says (`trigger_job`, or a slot created like the scheduler
does), never by running a scheduler."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from cronhive.api.app import close_app, create_app
from cronhive.broker import RunPublisher, hand_on_queue
from cronhive.dispatch import trigger_job
from cronhive.domain import FINAL_RUN_STATUSES, Job, RunError, new_run, new_run_id, utcnow
from cronhive.enums import ErrorType, LeaseScope, RunStatus, Trigger
from cronhive.errors import LeaseHeld
from cronhive.leases import reservation_holder
from cronhive.settings import Settings
from cronhive.snapshots import snapshot_for
from cronhive.store import MongoStore
from cronhive.worker.records import hand_on_message
from tests import services
from tests.worker.cluster import WorkerCluster, wait_for
from tests.worker.handlers_for_tests import read_events

LEASE_S = 3
BACKOFF_MS = 300

pytestmark = pytest.mark.slow


@dataclass
class System:
    settings: Settings
    store: MongoStore
    publisher: RunPublisher
    cluster: WorkerCluster
    metrics_port: int
    dead_letters: list[dict[str, Any]]

    def job(self, job_id: str, **fields: Any) -> Job:
        body = {"job_id": job_id, "name": job_id, "schedule": "0 0 1 1 *", "handler": "noop", "enabled": False,
                **fields}
        return self.store.create_job(body, utcnow())

    def trigger(self, job_id: str) -> str:
        return trigger_job(self.store, self.publisher, job_id, utcnow(), LEASE_S).run_id

    def run(self, run_id: str) -> dict[str, Any]:
        return self.store.runs.find_one({"_id": run_id})

    def wait_status(self, run_id: str, statuses: tuple[str, ...], timeout_s: float,
                    attempt: int | None = None) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            ok = run["status"] in statuses and (attempt is None or run["attempt"] == attempt)
            return run if ok else None

        return wait_for(reached, timeout_s, f"run {run_id} to be {statuses} (attempt {attempt})")

    def wait_final(self, run_id: str, timeout_s: float = 20) -> dict[str, Any]:
        return self.wait_status(run_id, FINAL_RUN_STATUSES, timeout_s)

    def job_after(self, run_id: str, timeout_s: float = 5) -> dict[str, Any]:
        """The job once the run's outcome reached it (written right after the run's, in
        the update that releases the job lease)."""
        job_id = self.run(run_id)["job_id"]
        return wait_for(lambda: (job := self.store.jobs.find_one({"_id": job_id}))["last_run_id"] == run_id and job, timeout_s,
                        f"the outcome of {run_id} on job {job_id}")

    def dead_lettered(self, run_id: str, timeout_s: float = 10) -> dict[str, Any]:
        """The message of ``run_id`` on ``<queue>.XQ`` (dramatiq's dead-letter queue)."""
        def found() -> dict[str, Any] | None:
            taken = services.get_messages(self.settings.rabbitmq_url, f"{self.settings.runs_queue}.XQ")
            self.dead_letters.extend(json.loads(body) for body in taken)
            return next((m for m in self.dead_letters if m["args"] == [run_id]), None)

        return wait_for(found, timeout_s, f"run {run_id} on the dead-letter queue", interval_s=0.25)


@pytest.fixture(scope="module")
def system(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tag = uuid.uuid4().hex[:10]
    base_env = {key: value for key, value in os.environ.items()
                if key != "PROMETHEUS_MULTIPROC_DIR" and not key.startswith("dramatiq_")}
    env = {
        **base_env,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": f"cronhive_workers_{tag}",
        "MONGODB_TIMEOUT_MS": "2000",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "JOB_LEASE_S": str(LEASE_S),
        "RETRY_BACKOFF_MS": str(BACKOFF_MS),
        "HANDLER_MODULES": "tests.worker.handlers_for_tests",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    settings = Settings.from_env(env)
    store = MongoStore.open(settings)
    store.ensure_indexes()
    publisher = RunPublisher.open(settings)
    metrics_port = services.free_port()
    cluster = WorkerCluster(env, tmp_path_factory.mktemp("workers"), 4,
                            per_worker={0: {"METRICS_PORT": str(metrics_port)}})
    try:
        cluster.start()
        yield System(settings, store, publisher, cluster, metrics_port, [])
    finally:
        cluster.stop()
        publisher.close()
        store.client.drop_database(settings.mongodb_db)
        store.close()
        queue = settings.runs_queue
        services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")


@pytest.fixture(autouse=True)
def all_workers_up(system: System) -> Iterator[None]:
    """Each test starts with four live workers (a test may have killed one)."""
    system.cluster.start()
    yield
    for worker in system.cluster.workers:
        if worker.alive():
            worker.signal_tree(signal.SIGCONT)


def executions(events: list[dict[str, Any]], run_id: str) -> list[int]:
    """The attempts of ``run_id`` whose handler started."""
    return [event["attempt"] for event in events if event["run_id"] == run_id and event["event"] == "start"]


def test_a_run_published_several_times_runs_once(system: System, tmp_path: Path) -> None:
    events = tmp_path / "events"
    run_ids = []
    for index in range(4):  # forbid: the trigger reserves each job's lease
        system.job(f"dup_{index}", handler="record", args={"file": str(events), "seconds": 0.3})
        run_ids.append(system.trigger(f"dup_{index}"))
    system.job("dup_allow", handler="record", overlap_policy="allow", args={"file": str(events), "seconds": 0.3})
    run_ids += [system.trigger("dup_allow") for _ in range(4)]  # allow: no job lease, each run its own
    for run_id in run_ids:  # the same message twice more (a scheduler failover re-publishes)
        job_id = system.run(run_id)["job_id"]
        system.publisher.publish_run(run_id, job_id)
        system.publisher.publish_run(run_id, job_id)

    for run_id in run_ids:
        run = system.wait_final(run_id)
        assert run["status"] == "succeeded" and run["attempt"] == 1, run
    time.sleep(0.5)  # let any stray duplicate reach a worker
    recorded = read_events(str(events))
    for run_id in run_ids:
        assert executions(recorded, run_id) == [1], run_id
    assert len({event["pid"] for event in recorded}) >= 2  # several workers took part


def test_a_worker_killed_mid_run_leaves_an_abandoned_run_and_the_job_fires_again(system: System) -> None:
    system.job("crash", handler="sleep", args={"seconds": 30}, max_retries=0)
    run_id = system.trigger("crash")
    running = system.wait_status(run_id, ("running",), 15)
    victim = system.cluster.by_worker_name(running["worker"])
    assert system.store.jobs.find_one({"_id": "crash"})["lease"]["holder"] == running["lease_holder"]

    victim.kill()  # SIGKILL the whole tree mid-run
    killed_at = time.monotonic()
    run = system.wait_final(run_id, timeout_s=LEASE_S + 15)
    resolved_s = time.monotonic() - killed_at
    assert run["status"] == "abandoned" and run["attempt"] == 1, run
    assert run["error"]["type"] == "abandoned"
    assert resolved_s <= LEASE_S + 10
    job = system.job_after(run_id)
    assert job["lease"] is None and job["last_run_status"] == "abandoned"
    assert all(w.alive() for w in system.cluster.workers if w is not victim)  # the other trees live on

    system.store.update_job("crash", {"args": {"seconds": 0.1}}, utcnow())
    again = system.wait_final(system.trigger("crash"))
    assert again["status"] == "succeeded"


def test_a_handler_longer_than_three_leases_keeps_its_lease(system: System, tmp_path: Path) -> None:
    events = tmp_path / "events"
    system.job("long", handler="record", args={"file": str(events), "seconds": 3.3 * LEASE_S})
    run_id = system.trigger("long")
    running = system.wait_status(run_id, ("running",), 15)
    holder, token = running["lease_holder"], running["lease_token"]
    system.publisher.publish_run(run_id, "long")  # a duplicate meanwhile must not start anything
    samples = 0
    while (run := system.run(run_id))["status"] == "running":
        lease = system.store.jobs.find_one({"_id": "long"})["lease"]
        now = utcnow()
        if system.run(run_id)["status"] != "running":
            break
        assert lease is not None and (lease["holder"], lease["token"]) == (holder, token)
        assert lease["expires_at"] > now, "the lease lapsed while the handler ran"
        assert run["attempt"] == 1
        samples += 1
        time.sleep(0.25)
    assert samples >= 20  # sampled across the whole run
    run = system.wait_final(run_id)  # the loop may have stopped on a read taken just before the outcome
    assert run["status"] == "succeeded" and run["attempt"] == 1
    assert run["duration_ms"] >= 3.3 * LEASE_S * 1000
    assert executions(read_events(str(events)), run_id) == [1]


def test_a_stalled_worker_cannot_overwrite_the_newer_attempt(system: System, tmp_path: Path) -> None:
    events = tmp_path / "events"
    system.job("stall", handler="record", args={"file": str(events), "seconds": 5}, max_retries=1)
    run_id = system.trigger("stall")
    first = system.wait_status(run_id, ("running",), 15)
    stalled = system.cluster.by_worker_name(first["worker"])
    stalled.signal_tree(signal.SIGSTOP)
    try:
        second = system.wait_status(run_id, ("running",), LEASE_S + 15, attempt=2)
    finally:
        stalled.signal_tree(signal.SIGCONT)
    assert second["worker"] != first["worker"] and second["lease_token"] > first["lease_token"]

    def rejected() -> bool:
        return any(line_about(line, run_id, "late write rejected") for line in stalled.log().splitlines())

    wait_for(rejected, 15, "the stalled worker's late write to be rejected")
    run = system.wait_final(run_id)
    assert run["status"] == "succeeded" and run["attempt"] == 2 and run["worker"] == second["worker"]
    assert [(a["attempt"], a["status"]) for a in run["attempts"]] == [(1, "abandoned"), (2, "succeeded")]
    job = system.job_after(run_id)
    assert job["last_run_id"] == run_id and job["last_run_status"] == "succeeded" and job["lease"] is None
    assert sorted(executions(read_events(str(events)), run_id)) == [1, 2]


def line_about(line: str, run_id: str, text: str) -> bool:
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return event.get("run_id") == run_id and text in event.get("event", "")


def fire_slot(system: System, job_id: str, slot: datetime) -> str:
    """Create a slot's run the way the scheduler does (run lifecycle contract, ``forbid``)."""
    return fire_reserved_slot(system, job_id, slot)[0]


def fire_reserved_slot(system: System, job_id: str, slot: datetime) -> tuple[str, int | None]:
    """`fire_slot`, also returning the token reserved for the run (None: skipped)."""
    now = utcnow()
    run_id = new_run_id(slot)
    job = system.store.get_job(job_id)
    lease = system.store.claim_lease(LeaseScope.JOB, job_id, reservation_holder(run_id), LEASE_S, now, run_id=run_id)
    if lease is None:
        skipped = replace(new_run(job, run_id, Trigger.SCHEDULE, slot, now, None, status=RunStatus.SKIPPED),
                          finished_at=now, error=RunError(ErrorType.OVERLAP, "the job's lease is held"))
        system.store.insert_run(skipped)
        return run_id, None
    system.store.insert_run(new_run(job, run_id, Trigger.SCHEDULE, slot, now, lease))
    publish_slot(system, job, run_id, slot, lease.token)
    system.store.mark_run_queued(run_id, now)
    return run_id, lease.token


def publish_slot(system: System, job: Job, run_id: str, slot: datetime, token: int) -> None:
    """Publish a slot run's message as the leader does: with the job's snapshot."""
    snapshot = snapshot_for(job, Trigger.SCHEDULE, slot, token)
    assert snapshot is not None
    published = system.publisher.publish_runs([(run_id, job.job_id)], snapshots={run_id: snapshot})
    assert published.confirmed == [run_id]


def test_slot_runs_published_many_times_with_their_snapshot_each_run_once(system: System, tmp_path: Path) -> None:
    """Four worker processes race to claim the same reservations, each through its own
    group commit (batched claims): every run has exactly one attempt, never two at once."""
    events = tmp_path / "events"
    run_ids: list[tuple[str, Job, datetime, int]] = []
    for index in range(24):
        job = system.job(f"snap_{index}", handler="record", args={"file": str(events), "seconds": 0.2})
        slot = utcnow().replace(microsecond=0)
        run_id, token = fire_reserved_slot(system, job.job_id, slot)
        assert token is not None
        run_ids.append((run_id, job, slot, token))
    for _ in range(3):  # the same messages again, snapshots and all, while the first ones are taken
        for run_id, job, slot, token in run_ids:
            publish_slot(system, job, run_id, slot, token)

    for run_id, *_ in run_ids:
        run = system.wait_final(run_id)
        assert run["status"] == "succeeded" and run["attempt"] == 1, run
        assert [a["attempt"] for a in run["attempts"]] == [1]
    time.sleep(0.5)  # let any stray duplicate reach a worker
    recorded = read_events(str(events))
    for run_id, job, *_ in run_ids:
        assert executions(recorded, run_id) == [1], run_id
        stored = system.store.jobs.find_one({"_id": job.job_id})
        assert stored["lease"] is None and stored["last_run_id"] == run_id
    assert len({event["pid"] for event in recorded}) >= 2  # several workers took part


def test_a_worker_killed_between_its_snapshot_start_and_the_outcome_is_recovered_once(system: System,
                                                                                       tmp_path: Path) -> None:
    """SIGKILL after the claim and the start made from the snapshot, before any outcome:
    the dead attempt is found, its retry runs on another worker (reading the job as it is
    now), and the two attempts never overlap."""
    events = tmp_path / "events"
    job = system.job("snap_crash", handler="record", args={"file": str(events), "seconds": 30}, max_retries=1)
    run_id = fire_slot(system, job.job_id, utcnow().replace(microsecond=0))
    running = system.wait_status(run_id, ("running",), 15)
    victim = system.cluster.by_worker_name(running["worker"])
    wait_for(lambda: executions(read_events(str(events)), run_id) == [1], 10, "the handler to start")
    system.store.update_job("snap_crash", {"args": {"file": str(events), "seconds": 0.1}}, utcnow())

    victim.kill()
    killed_at = datetime.now(UTC)
    run = system.wait_final(run_id, timeout_s=LEASE_S + 20)
    assert run["status"] == "succeeded" and run["attempt"] == 2, run
    assert run["worker"] != running["worker"] and run["started_at"] >= killed_at - timedelta(seconds=1)
    assert [(a["attempt"], a["status"]) for a in run["attempts"]] == [(1, "abandoned"), (2, "succeeded")]
    assert executions(read_events(str(events)), run_id) == [1, 2]
    stored = system.job_after(run_id)
    assert stored["lease"] is None and stored["last_run_status"] == "succeeded"


def test_forbid_never_overlaps_runs_and_skips_the_slots_in_between(system: System, tmp_path: Path) -> None:
    events = tmp_path / "events"
    system.job("every2s", handler="record", args={"file": str(events), "seconds": 5}, overlap_policy="forbid")
    app = create_app(system.settings)
    client = app.test_client()
    start = time.monotonic()
    run_ids = []
    try:
        for index in range(4):  # a 5 s handler on a 2 s schedule
            time.sleep(max(0.0, start + 2 * index - time.monotonic()))
            run_ids.append(fire_slot(system, "every2s", utcnow().replace(microsecond=0)))
            if index == 0:
                system.wait_status(run_ids[0], ("running",), 5)
                with pytest.raises(LeaseHeld):
                    system.trigger("every2s")
                response = client.post("/api/v1/cron/jobs/every2s/trigger")
                assert response.status_code == 409 and response.get_json()["lock_acquired"] is False
                assert client.get("/api/v1/cron/jobs/every2s").get_json()["lock_acquired"] is True
    finally:
        close_app(app)

    runs = [system.wait_final(run_id, timeout_s=15) for run_id in run_ids]
    statuses = [run["status"] for run in runs]
    assert statuses.count("succeeded") >= 2 and statuses.count("skipped") >= 2, statuses
    assert statuses[0] == "succeeded" and statuses[1] == "skipped"
    for run in runs:
        if run["status"] == "skipped":
            assert run["error"]["type"] == "overlap"
    executed = sorted((run["started_at"], run["finished_at"]) for run in runs if run["status"] == "succeeded")
    for (_, finished), (started, _) in itertools.pairwise(executed):
        assert finished <= started, executed  # never overlapping
    recorded = sorted(read_events(str(events)), key=lambda event: event["t"])
    active = 0
    for event in recorded:
        active += {"start": 1, "end": -1}[event["event"]]
        assert active <= 1, recorded
    assert len(recorded) == 2 * statuses.count("succeeded")


def test_a_run_over_its_timeout_is_timed_out_and_dead_lettered(system: System, tmp_path: Path) -> None:
    system.job("slow", handler="record", args={"file": str(tmp_path / "events"), "seconds": 20}, timeout_s=1)
    run_id = system.trigger("slow")
    run = system.wait_final(run_id, timeout_s=15)
    assert run["status"] == "timed_out" and run["error"]["type"] == "timeout"
    assert 1000 <= run["duration_ms"] < 5000
    job = system.job_after(run_id)
    assert job["last_run_status"] == "timed_out" and job["lease"] is None
    assert system.dead_lettered(run_id)["actor_name"] == "execute_run"


def test_failures_are_retried_with_backoff_then_dead_lettered(system: System, tmp_path: Path) -> None:
    system.job("broken", handler="fail", args={"message": "disk full"}, max_retries=2)
    system.job("flaky", handler="record", args={"file": str(tmp_path / "events"), "fail_attempts": 1},
               max_retries=1)
    broken_id, flaky_id = system.trigger("broken"), system.trigger("flaky")

    broken = system.wait_final(broken_id, timeout_s=20)
    assert broken["status"] == "failed" and broken["attempt"] == 3
    assert {key: broken["error"][key] for key in ("type", "message")} == {"type": "HandlerFailed",
                                                                          "message": "disk full"}
    assert broken["error"]["traceback"].endswith("HandlerFailed: disk full")
    attempts = broken["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "failed")]
    for number, (before, after) in enumerate(itertools.pairwise(attempts), start=1):
        gap_ms = (after["started_at"] - before["finished_at"]).total_seconds() * 1000
        assert gap_ms >= BACKOFF_MS * 2 ** (number - 1) - 5, attempts  # exponential backoff
    assert len({a["worker"] for a in attempts}) >= 1
    assert system.dead_lettered(broken_id)["args"] == [broken_id]

    flaky = system.wait_final(flaky_id, timeout_s=20)
    assert flaky["status"] == "succeeded" and flaky["attempt"] == 2
    assert [a["status"] for a in flaky["attempts"]] == ["failed", "succeeded"]
    assert flaky["attempts"][0]["error"]["type"] == "FlakyFailure"


def test_the_worker_serves_health_and_metrics(system: System) -> None:
    system.job("metered")
    system.wait_final(system.trigger("metered"))
    base = f"http://127.0.0.1:{system.metrics_port}"
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {"mongodb": "ok", "rabbitmq": "ok"}
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert "cronhive_worker_run_duration_seconds_count" in metrics


def test_a_queue_of_fire_all_slots_moves_on_through_a_backlog_of_the_runs_queue(system: System) -> None:
    """Each slot that ends hands the lease on through the hand-on queue, which workers take
    before the runs queue: a queue of slots does not wait behind the runs queue's backlog."""
    backlog_job = system.job("backlog", handler="sleep", args={"seconds": 0.2}, overlap_policy="allow")
    now = utcnow()
    backlog = [new_run_id(now) for _ in range(200)]  # 5 s of work for the 8 threads
    for run_id in backlog:
        system.store.insert_run(new_run(backlog_job, run_id, Trigger.MANUAL, now, now, None))
    assert system.publisher.publish_runs([(run_id, "backlog") for run_id in backlog]).confirmed == backlog

    job = system.job("chain", misfire_policy="fire_all", overlap_policy="forbid")
    start = now.replace(microsecond=0) - timedelta(seconds=10)
    head = new_run_id(start)
    lease = system.store.claim_lease(LeaseScope.JOB, "chain", reservation_holder(head), LEASE_S, utcnow(),
                                     run_id=head)
    system.store.insert_run(new_run(job, head, Trigger.SCHEDULE, start, utcnow(), lease))
    chain = [head]
    for index in range(1, 4):  # the slots behind it: no reservation; their messages behind the backlog
        slot = start + timedelta(seconds=index)
        chain.append(new_run_id(slot))
        system.store.insert_run(new_run(job, chain[-1], Trigger.SCHEDULE, slot, utcnow(), None))
        system.publisher.publish_run(chain[-1], "chain")
    # the lease is handed on to the head (as the run before it would)
    system.publisher.broker.declare_queue(hand_on_queue(system.settings.runs_queue))
    system.publisher.broker.enqueue(hand_on_message(system.settings.runs_queue, head, "chain"))

    ended = [system.wait_final(run_id, timeout_s=30) for run_id in chain]
    assert [run["status"] for run in ended] == ["succeeded"] * 4
    started = [run["started_at"] for run in ended]
    assert started == sorted(started)  # oldest first, one after another
    last = ended[-1]["finished_at"]
    for run_id in backlog:
        system.wait_final(run_id, timeout_s=60)
    # each hand-on waits only for a thread to come free (a 0.2 s run): some 40 of the backlog
    # end first; behind the backlog, the second slot alone would start after ~190 of them
    before = system.store.runs.count_documents({"_id": {"$in": backlog}, "finished_at": {"$lt": last}})
    print(f"\n{before} of the backlog's {len(backlog)} runs ended before the queue of slots did")
    assert before < len(backlog) / 2, f"{before} of the backlog's {len(backlog)} runs ended before the queue did"
