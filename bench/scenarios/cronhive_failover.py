"""cronhive under failover: SIGKILL the leader repeatedly while jobs fire every 2 s.

``profile.failover_jobs`` jobs ``failover_000``… on ``"*/2 * * * * *"`` with
``misfire_policy = "fire_all"`` (every slot missed while no leader was up gets
its run once a leader is back), the default ``overlap_policy`` (``forbid``: a
slot whose job still holds its lease is recorded ``skipped`` — a run record,
not a loss), handler ``bench_record_slot`` (records each execution's start per
slot). Three ``python -m cronhive.scheduler`` (product
defaults: ``LEADER_LEASE_S`` 10) and ``python -m cronhive.worker --processes 2 --threads 8``.

``profile.failover_kills`` times: wait a varying 0.5–4 s after the leader's last
claim or renewal (so kills land at every phase of its renew interval), SIGKILL the
lease holder's process (its pid from the ``leases`` document ``_id: "scheduler"``,
the document ``GET /api/v1/cron/scheduler`` reads), start a replacement at once
(there are always two standbys), and poll the lease document every 20 ms:

- ``takeover_s`` {median, max}: the kill → the first instant the lease document
  shows a new holder with a new term (poll resolution 20 ms);
- ``lost``: expected (job, slot) pairs — every even second from the jobs' first
  slot to the last slot before the end — with no run although the job has moved
  past the slot (``undispatched``: no run yet because the scheduler had not
  reached the slot when observation ended: it lags, nothing was skipped);
- ``doubled``: slots with more than one run (the unique ``slot_key`` index should
  make this 0 by construction) or more than one handler execution.

- ``executed_ratio``: slots whose handler started ÷ slots expected (target ≥ 0.99).
- ``mongo_ops_per_executed_run``: MongoDB commands of every scheduler and worker
  process (``bench.probe``) from the first kill to the count, ÷ slots executed;
  ``mongo_commands``: the most frequent of them (``find runs``, ``aggregate runs``…).

Also reported: ``not_executed`` (slots whose handler never started by the end:
``skipped`` by overlap, or still queued), ``run_statuses``, ``late_catch_up_s``
(the latest start against its slot).
"""

from __future__ import annotations

import logging
import random
import signal
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bench import probe
from bench.cronhive_handlers import parse_slot_key
from bench.procs import ProcessGroup
from bench.profiles import Profile
from bench.recorder import StartsReader
from bench.scenarios.cronhive_cluster import CronhiveCluster, epoch, holder_pid, wait_until
from bench.services import Services

log = logging.getLogger("bench.cronhive.failover")

SCHEDULERS = 3
#: the product's default leader lease, set explicitly: the takeover target (≤ 12 s) is against it
LEADER_LEASE_S = 10
SCHEDULE_EVERY_S = 2
LEASE_POLL_S = 0.02
#: a takeover slower than this is reported as failed (no new leader)
TAKEOVER_TIMEOUT_S = 60.0
#: after the last takeover: let the catch-up finish and a few slots fire normally
SETTLE_S = 6.0
#: after the last expected slot: time for the scheduler to reach it, then for its runs to finish
DISPATCH_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 90.0


def job_id(index: int) -> str:
    return f"failover_{index:03d}"


def run(profile: Profile, services: Services) -> dict[str, Any]:
    cluster = CronhiveCluster(services, "failover")
    rng = random.Random(6)  # the same kill phases every run
    job_ids = [job_id(i) for i in range(profile.failover_jobs)]
    try:
        cluster.load_jobs({"name": job, "job_id": job, "schedule": f"*/{SCHEDULE_EVERY_S} * * * * *",
                           "handler": "bench_record_slot", "misfire_policy": "fire_all"} for job in job_ids)
        first_slot = first_expected_slot(cluster)
        with ProcessGroup() as group:
            env = cluster.env(probe=True, LEADER_LEASE_S=str(LEADER_LEASE_S))
            schedulers = [cluster.start_scheduler(group, env) for _ in range(SCHEDULERS)]
            workers = cluster.start_workers(group, env, profile.worker_processes, profile.worker_threads)
            wait_until(cluster.ready_checks(schedulers, workers, profile.worker_processes), READY_TIMEOUT_S)
            client = cluster.client()
            window = probe.ProbeWindow(cluster.probe_dir)
            window.open()
            try:
                takeovers = [kill_leader(cluster, group, client, env, rng) for _ in range(profile.failover_kills)]
                time.sleep(SETTLE_S)
                last_slot = int(time.time() - 1) // SCHEDULE_EVERY_S * SCHEDULE_EVERY_S
                dispatched = wait_dispatched(cluster, client, last_slot)
                drained = wait_drained(cluster, client)
                log.info("failover: slots up to %s dispatched: %s, every run finished: %s", _dt(last_slot),
                         dispatched, drained)
                counted = count_slots(cluster, client, job_ids, first_slot, last_slot)
                time.sleep(probe.DUMP_S + 0.1)  # the dumps that cover the count
                window.close()
            finally:
                client.close()
    finally:
        cluster.cleanup()
    commands: Counter[str] = Counter()
    for by_name, _ in window.deltas().values():
        commands.update(by_name)
    executed = counted["expected"] - counted["not_executed"]
    return {
        "kills": profile.failover_kills,
        "takeover_s": {"median": round(statistics.median(takeovers), 2), "max": round(max(takeovers), 2)},
        "lost": counted["lost"],
        "doubled": counted["doubled"],
        "executed_ratio": round(executed / counted["expected"], 4) if counted["expected"] else None,
        "mongo_ops_per_executed_run": round(sum(commands.values()) / executed, 2) if executed else None,
        "mongo_commands": dict(commands.most_common(6)),
        "takeovers_s": [round(value, 2) for value in takeovers],
        "expected_slots": counted["expected"],
        "undispatched": counted["undispatched"],
        "not_executed": counted["not_executed"],
        "doubled_runs": counted["doubled_runs"],
        "doubled_executions": counted["doubled_executions"],
        "run_statuses": counted["statuses"],
        "late_catch_up_s": counted["late_catch_up_s"],
        "dispatched": dispatched,
        "drained": drained,
        "setup": (f"{profile.failover_jobs} jobs '*/{SCHEDULE_EVERY_S} * * * * *' fire_all (overlap forbid); {SCHEDULERS} × "
                  f"python -m cronhive.scheduler (LEADER_LEASE_S 10) + python -m cronhive.worker --processes "
                  f"{profile.worker_processes} --threads {profile.worker_threads}; SIGKILL the leader, restart at once"),
    }


def first_expected_slot(cluster: CronhiveCluster) -> int:
    """The jobs' first slot (their ``next_fire_at`` as loaded): fire_all runs every slot from it."""
    client = cluster.client()
    try:
        doc = client[cluster.database]["jobs"].find_one({}, {"next_fire_at": 1}, sort=[("next_fire_at", -1)])
    finally:
        client.close()
    return round(epoch(doc["next_fire_at"]))


def current_lease(cluster: CronhiveCluster, client: Any) -> dict[str, Any] | None:
    lease = cluster.leader_lease(client)
    if lease is None or epoch(lease["expires_at"]) <= time.time():
        return None
    return lease


def kill_leader(cluster: CronhiveCluster, group: ProcessGroup, client: Any, env: dict[str, str],
                rng: random.Random) -> float:
    """One SIGKILL of the leader, 0.5–4 s after its last claim or renewal; returns the
    takeover time (kill → new holder seen)."""
    lease = wait_for_lease(cluster, client, None)
    renewed_at = epoch(lease["expires_at"]) - LEADER_LEASE_S
    time.sleep(max(0.0, renewed_at + rng.uniform(0.5, 4.0) - time.time()))
    lease = wait_for_lease(cluster, client, None)
    pid = holder_pid(lease)
    victim = cluster.scheduler_by_pid(pid) if pid is not None else None
    if victim is None:
        raise RuntimeError(f"the lease holder {lease.get('holder')!r} is none of the schedulers started")
    killed_at = time.time()
    victim.signal_group(signal.SIGKILL)
    victim.popen.wait()
    cluster.start_scheduler(group, env)
    successor = wait_for_lease(cluster, client, int(lease["token"]))
    takeover = time.time() - killed_at
    log.info("failover: killed %s (term %s); %s took over in %.2f s (term %s)", lease["holder"], lease["token"],
             successor["holder"], takeover, successor["token"])
    return takeover


def wait_for_lease(cluster: CronhiveCluster, client: Any, after_term: int | None) -> dict[str, Any]:
    """A live lease (with a term above ``after_term`` when given), polled every 20 ms."""
    deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
    while time.monotonic() < deadline:
        lease = current_lease(cluster, client)
        if lease is not None and (after_term is None or int(lease["token"]) > after_term):
            return lease
        time.sleep(LEASE_POLL_S)
    raise RuntimeError(f"no leader within {TAKEOVER_TIMEOUT_S:.0f} s (after term {after_term})")


def wait_dispatched(cluster: CronhiveCluster, client: Any, last_slot: int) -> bool:
    """Until the scheduler moved every job past ``last_slot`` (or time runs out). Polls
    through the index "due" once a second: the harness must not load the store it measures."""
    jobs = client[cluster.database]["jobs"]
    deadline = time.monotonic() + DISPATCH_TIMEOUT_S
    while time.monotonic() < deadline:
        if jobs.count_documents({"due_at": {"$lte": _dt(last_slot)}}) == 0:
            return True
        time.sleep(1.0)
    return False


def wait_drained(cluster: CronhiveCluster, client: Any) -> bool:
    """Until no run is pending, queued or running (index "by_status"), or time runs out."""
    runs = client[cluster.database]["runs"]
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if runs.count_documents({"status": {"$in": ["pending", "queued", "running"]}}) == 0:
            return True
        time.sleep(1.0)
    return False


def _dt(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def count_slots(cluster: CronhiveCluster, client: Any, job_ids: list[str], first_slot: int,
                last_slot: int) -> dict[str, Any]:
    """Slots with no run are *lost* once their job moved past them (``next_fire_at`` later),
    *undispatched* while the scheduler has not reached them yet.

    The jobs' positions are read *before* the runs: the leader inserts a slot's run
    before it moves the job past the slot, so every slot behind a position read first
    has its run in the read that follows. Read the other way round while the leader
    still dispatches (``dispatched`` false), the runs it inserts between the two reads
    count as lost although nothing was (80 "lost" in one run of 2026-12-03)."""
    expected = {(job, slot) for job in job_ids for slot in range(first_slot, last_slot + 1, SCHEDULE_EVERY_S)}
    position = {doc["_id"]: epoch(doc["next_fire_at"])
                for doc in client[cluster.database]["jobs"].find({}, {"next_fire_at": 1})}
    runs = list(client[cluster.database]["runs"].find(
        {"trigger": "schedule", "scheduled_for": {"$gte": _dt(first_slot), "$lte": _dt(last_slot)}},
        {"job_id": 1, "scheduled_for": 1, "status": 1}))
    per_slot = Counter((run["job_id"], round(epoch(run["scheduled_for"]))) for run in runs)
    executions: Counter[tuple[str, int]] = Counter()
    latest_late = 0.0
    for key, at in StartsReader(cluster.record_dir).read_new():
        job, slot = parse_slot_key(key)
        if slot is not None and (job, slot) in expected:
            executions[(job, slot)] += 1
            latest_late = max(latest_late, at - slot)
    doubled_runs = {slot for slot, count in per_slot.items() if count > 1}
    doubled_executions = {slot for slot, count in executions.items() if count > 1}
    missing = [slot for slot in expected if slot not in per_slot]
    return {
        "expected": len(expected),
        "lost": sum(1 for job, slot in missing if slot < position.get(job, float("inf"))),
        "undispatched": sum(1 for job, slot in missing if slot >= position.get(job, float("inf"))),
        "doubled": len(doubled_runs | doubled_executions),
        "doubled_runs": len(doubled_runs),
        "doubled_executions": len(doubled_executions),
        "not_executed": sum(1 for slot in expected if slot not in executions),
        "statuses": dict(Counter(run["status"] for run in runs)),
        "late_catch_up_s": round(latest_late, 2),
    }
