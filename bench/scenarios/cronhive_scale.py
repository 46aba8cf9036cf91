"""cronhive at scale: many per-minute jobs spread across the minute, for a few minutes.

``profile.scale_jobs`` jobs ``scale_000000``… with 6-field (seconds first)
schedules ``"<s> * * * * *"``, ``s = i mod 60``: every job fires once a minute
and every second of the minute has ``jobs / 60`` jobs due, an offered load of
``jobs / 60`` fires per second. Handler ``bench_record_slot`` records each
execution's start per slot (`bench.cronhive_handlers`); jobs are bulk-loaded in
the store's own document shape. Processes as deployed: two ``python -m
scheduler`` (leader + standby) and ``python -m cronhive.worker --processes 2 --threads 8``,
product defaults; every one of them starts with `bench.probe` (``bench/shim``):
a pymongo command listener and an AMQP publish counter, cronhive's code untouched.

After a warm-up, one window of ``profile.scale_duration_s`` is measured (slots
``t0 <= slot < t1``):

- ``fires_per_s``: runs whose publish RabbitMQ confirmed inside the window, per
  second (``offered_per_s`` beside it);
- ``lateness_p99_ms``: handler start − slot, p99 over every slot of the window; a
  slot whose handler had not started when observation ended (``grace_s`` after
  the window) counts as late as that moment (``not_started``), never as on time.
  ``publish_lateness_p99_ms``: publish confirm − slot, likewise;
- ``mongo_ops_per_run``: MongoDB commands sent during the window by the scheduler
  processes ÷ fires in the window, plus those sent by the worker processes ÷
  handler executions in the window (``executed_per_s``) — each side per run it
  handled, so a lagging side is not flattered (``mongo_ops_per_run_by_side``,
  ``mongo_ops_by_command``: per side and command name);
- ``mongo_docs_written_per_run``: documents the processes' write commands wrote
  (from the replies), per run the same way (``…_by_side``);
- ``publishes_per_run``: AMQP publishes (confirmed inside the window, from the
  probe's per-publish records), counted the same way;
- ``scheduler_cpu_s_per_1k_fires``: utime + stime of the scheduler processes
  (leader and standby: leadership may move under load) over the window
  (``/proc/<pid>/stat``) per 1,000 fires (``leader_cpu_s``: the leader's share);
- ``scheduler_rss_mb``: the schedulers' peak RSS (``VmHWM``, ``/proc/<pid>/status``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

from bench import probe
from bench.cronhive_handlers import parse_slot_key
from bench.procs import ProcessGroup
from bench.profiles import Profile
from bench.recorder import StartsReader
from bench.scenarios.cronhive_cluster import (
    CronhiveCluster,
    epoch,
    holder_pid,
    proc_cpu_s,
    proc_status_kb,
    wait_until,
)
from bench.services import Services
from bench.stats import percentile

log = logging.getLogger("bench.cronhive.scale")

SCHEDULERS = 2
#: from readiness to the window: the first slots' start-up transient stays out of it
WARMUP_S = 10.0
#: after the window: time for its last slots to be published and started
GRACE_S = 3.0
READY_TIMEOUT_S = 120.0


def job_id(index: int) -> str:
    return f"scale_{index:06d}"


def job_second(index: int) -> int:
    return index % 60


def job_specs(count: int) -> list[dict[str, Any]]:
    return [{"name": job_id(i), "job_id": job_id(i), "schedule": f"{job_second(i)} * * * * *",
             "handler": "bench_record_slot"} for i in range(count)]


def expected_slots(jobs: int, t0: int, t1: int) -> int:
    """How many (job, slot) pairs fall in [t0, t1) (whole seconds)."""
    per_second = Counter(job_second(i) for i in range(jobs))
    return sum(per_second[second % 60] for second in range(t0, t1))


def run(profile: Profile, services: Services) -> dict[str, Any]:
    cluster = CronhiveCluster(services, "scale")
    jobs = profile.scale_jobs
    try:
        began = time.monotonic()
        loaded = cluster.load_jobs(job_specs(jobs))
        load_s = time.monotonic() - began
        log.info("scale: %d jobs loaded in %.1f s", loaded, load_s)
        with ProcessGroup() as group:
            env = cluster.env(probe=True)
            schedulers = [cluster.start_scheduler(group, env) for _ in range(SCHEDULERS)]
            workers = cluster.start_workers(group, env, profile.worker_processes, profile.worker_threads)
            wait_until(cluster.ready_checks(schedulers, workers, profile.worker_processes), READY_TIMEOUT_S)
            measured = measure_window(cluster, group, profile)
            log.info("scale: window measured; stopping the processes")
        measured.update(analyse(cluster, jobs, measured))
        measured["load_s"] = round(load_s, 1)
    finally:
        cluster.cleanup()
    return result_section(profile, measured)


def measure_window(cluster: CronhiveCluster, group: ProcessGroup, profile: Profile) -> dict[str, Any]:
    """Warm up, then the window: counters, the schedulers' CPU and peak RSS at both ends."""
    t0 = math.ceil(time.time() + WARMUP_S)
    t1 = t0 + int(profile.scale_duration_s)
    window = probe.ProbeWindow(cluster.probe_dir)
    time.sleep(max(0.0, t0 - time.time()))
    leader = current_leader(cluster)
    pids = [process.pid for process in cluster.schedulers]
    window.open()
    cpu0 = {pid: proc_cpu_s(pid) for pid in pids}
    while time.time() < t1:
        dead = group.dead()
        if dead:
            raise RuntimeError(f"{dead[0].name} exited during the window:\n{dead[0].tail()}")
        time.sleep(min(1.0, max(0.0, t1 - time.time())))
    # the probes dump every DUMP_S: wait for the dumps that cover t1
    time.sleep(probe.DUMP_S + 0.1)
    window.close()
    cpu1 = {pid: proc_cpu_s(pid) for pid in pids}
    rss_kb = max((proc_status_kb(pid, "VmHWM") or 0) for pid in pids)
    still_leader = current_leader(cluster) == leader
    cpu = {pid: cpu1[pid] - cpu0[pid] for pid in pids if cpu0[pid] is not None and cpu1[pid] is not None}
    time.sleep(max(0.0, t1 + GRACE_S - time.time()))
    observed_until = time.time()
    return {"t0": t0, "t1": t1, "observed_until": observed_until, "window": window, "leader": leader,
            "leader_kept": still_leader, "scheduler_pids": pids, "cpu_s": sum(cpu.values()),
            "leader_cpu_s": cpu.get(leader), "rss_kb": rss_kb}


def current_leader(cluster: CronhiveCluster) -> int:
    client = cluster.client()
    try:
        leader = holder_pid(cluster.leader_lease(client))
    finally:
        client.close()
    if leader is None or cluster.scheduler_by_pid(leader) is None:
        raise RuntimeError(f"no leader among the schedulers started (lease holder pid {leader})")
    return leader


def analyse(cluster: CronhiveCluster, jobs: int, measured: dict[str, Any]) -> dict[str, Any]:
    """Fires, lateness, operations and publishes of the window (processes stopped)."""
    t0, t1, until = measured["t0"], measured["t1"], measured["observed_until"]
    duration = t1 - t0
    confirmed = probe.read_publishes(cluster.probe_dir)
    starts: dict[tuple[str, int], float] = {}
    executed = 0  # handler executions inside the window, whatever their slot: the workers' throughput
    for key, at in StartsReader(cluster.record_dir).read_new():
        job, slot = parse_slot_key(key)
        executed += t0 <= at < t1
        if slot is not None and t0 <= slot < t1 and at <= until:
            starts[(job, slot)] = min(at, starts.get((job, slot), at))
    slot_of = run_slots(cluster, t0, t1)
    fires = sum(1 for run_id, at in confirmed.items() if t0 <= at < t1 and run_id in slot_of.get("all", {}))
    expected = expected_slots(jobs, t0, t1)
    start_late = [(at - slot) * 1000 for (_, slot), at in starts.items()]
    not_started = expected - len(start_late)
    start_late += [(until - slot) * 1000 for slot in missing_slots(jobs, t0, t1, starts)]
    publish_late = [(confirmed[run_id] - slot) * 1000 for run_id, slot in slot_of["window"].items()
                    if run_id in confirmed and confirmed[run_id] <= until]
    published = len(publish_late)
    publish_late += [(until - slot) * 1000 for run_id, slot in slot_of["window"].items()
                     if run_id not in confirmed or confirmed[run_id] > until]
    publish_late += [(until - slot) * 1000 for slot in unfired_slots(jobs, t0, t1, slot_of["window"])]
    schedulers = set(measured["scheduler_pids"])
    by_command: dict[str, Counter[str]] = {"schedulers": Counter(), "workers": Counter()}
    for pid, (commands, _) in measured["window"].deltas().items():
        by_command["schedulers" if pid in schedulers else "workers"].update(commands)
    written = {"schedulers": 0, "workers": 0}
    for pid, docs in measured["window"].docs_written().items():
        written["schedulers" if pid in schedulers else "workers"] += docs
    publishes = {"schedulers": 0, "workers": 0}
    for pid, count in probe.publishes_between(cluster.probe_dir, t0, t1).items():
        publishes["schedulers" if pid in schedulers else "workers"] += count
    return {
        "duration": duration, "fires": fires, "executed": executed, "expected": expected,
        "published_in_window": published, "not_started": not_started, "start_late": start_late,
        "publish_late": publish_late, "by_command": by_command, "publishes": publishes, "written": written,
    }


def per_run(counts: dict[str, Any], fires: int, executed: int) -> dict[str, float | None]:
    """Each side per run it handled in the window: the schedulers' per fire, the workers'
    per execution (while the workers lag, the two differ), and their sum."""
    schedulers = counts["schedulers"] / fires if fires else None
    workers = counts["workers"] / executed if executed else None
    total = schedulers + workers if schedulers is not None and workers is not None else None
    return {"total": total, "schedulers": schedulers, "workers": workers}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def run_slots(cluster: CronhiveCluster, t0: int, t1: int) -> dict[str, dict[str, int]]:
    """run id -> slot (epoch s), for every scheduled run ("all") and the window's ("window")."""
    client = cluster.client()
    try:
        runs = client[cluster.database]["runs"].find({"trigger": "schedule"}, {"scheduled_for": 1})
        every = {run["_id"]: round(epoch(run["scheduled_for"])) for run in runs}
    finally:
        client.close()
    return {"all": every, "window": {run_id: slot for run_id, slot in every.items() if t0 <= slot < t1}}


def missing_slots(jobs: int, t0: int, t1: int, starts: dict[tuple[str, int], float]) -> list[int]:
    """Slots of the window whose handler did not start (job ``i`` fires at seconds ``≡ i mod 60``)."""
    return [second for second in range(t0, t1) for i in range(second % 60, jobs, 60)
            if (job_id(i), second) not in starts]


def unfired_slots(jobs: int, t0: int, t1: int, window_runs: dict[str, int]) -> list[int]:
    """Slots of the window that got no run at all (each counts once, at its slot)."""
    per_slot = Counter(window_runs.values())
    per_second = Counter(job_second(i) for i in range(jobs))
    return [second for second in range(t0, t1) for _ in range(per_second[second % 60] - per_slot[second])]


def result_section(profile: Profile, measured: dict[str, Any]) -> dict[str, Any]:
    fires, executed, duration = measured["fires"], measured["executed"], measured["duration"]
    by_command = measured["by_command"]
    ops = per_run({side: sum(counts.values()) for side, counts in by_command.items()}, fires, executed)
    publishes = per_run(measured["publishes"], fires, executed)
    written = per_run(measured["written"], fires, executed)
    start_late = sorted(measured["start_late"])
    publish_late = sorted(measured["publish_late"])
    cpu = measured["cpu_s"]
    return {
        "jobs": profile.scale_jobs,
        "fires_per_s": round(fires / duration, 1),
        "lateness_p99_ms": round(percentile(start_late, 99), 1) if start_late else None,
        "mongo_ops_per_run": _round(ops["total"], 2),
        "mongo_docs_written_per_run": _round(written["total"], 2),
        "publishes_per_run": _round(publishes["total"], 3),
        "scheduler_cpu_s_per_1k_fires": round(cpu / fires * 1000, 3) if fires and cpu is not None else None,
        "scheduler_rss_mb": round(measured["rss_kb"] / 1024, 1) if measured["rss_kb"] else None,
        "window_s": duration,
        "offered_per_s": round(measured["expected"] / duration, 1),
        "executed_per_s": round(executed / duration, 1),
        "lateness_p50_ms": round(percentile(start_late, 50), 1) if start_late else None,
        "publish_lateness_p99_ms": round(percentile(publish_late, 99), 1) if publish_late else None,
        "expected_slots": measured["expected"],
        "not_started": measured["not_started"],
        "mongo_docs_written_per_run_by_side": {"schedulers": _round(written["schedulers"], 3),
                                               "workers": _round(written["workers"], 3)},
        "mongo_ops_per_run_by_side": {"schedulers": _round(ops["schedulers"], 3), "workers": _round(ops["workers"], 3)},
        "mongo_ops_by_command": {
            side: {name: round(count / (fires if side == "schedulers" else executed), 3)
                   for name, count in counts.most_common()} if (fires if side == "schedulers" else executed) else {}
            for side, counts in by_command.items()},
        "publishes_per_run_by_side": {"schedulers": _round(publishes["schedulers"], 3),
                                      "workers": _round(publishes["workers"], 3)},
        "scheduler_cpu_s": round(cpu, 2) if cpu is not None else None,
        "leader_cpu_s": round(measured["leader_cpu_s"], 2) if measured["leader_cpu_s"] is not None else None,
        "leader_kept": measured["leader_kept"],
        "load_s": measured["load_s"],
        "setup": (f"{SCHEDULERS} × python -m cronhive.scheduler + python -m cronhive.worker --processes {profile.worker_processes} "
                  f"--threads {profile.worker_threads}; 6-field schedules '<s> * * * * *', s = i mod 60; "
                  f"product defaults; bench.probe in every process; window {duration} s after a {WARMUP_S:.0f} s warm-up"),
    }
