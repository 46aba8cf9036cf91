"""The chaos suite: a whole cluster of real processes under faults, audited by one
checker (`tests.chaos.audit`) while a mixed API load runs throughout.

``make test`` runs the bounded profile (``CHAOS_PROFILE`` unset: few faults, short
streams); ``make chaos`` the full one (``CHAOS_PROFILE=full``: 20 leader kills,
longer outages, a full RabbitMQ restart — which stops the machine's broker, so
never beside another suite).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import requests

from cronhive.domain import utcnow
from tests import services
from tests.chaos.audit import Report, Watched, audit, executions, wait_drained
from tests.chaos.harness import BASE, ApiLoad, ChaosCluster

pytestmark = pytest.mark.slow

FULL = os.environ.get("CHAOS_PROFILE") == "full"
HANDLER_S = 0.2
EVERY_2S = "*/2 * * * * *"
SKEW_SOURCE = Path(__file__).with_name("skew_clock.c")


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    clusters: list[ChaosCluster] = []

    def make(**options: Any) -> ChaosCluster:
        cluster = ChaosCluster(tmp_path / f"cluster-{len(clusters)}", **options)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.stop()
        shutil.rmtree(cluster.tmp, ignore_errors=True)


def create(cluster: ChaosCluster, job_id: str, **fields: Any) -> Watched:
    body = {"name": job_id, "job_id": job_id, "schedule": EVERY_2S, "handler": "chaos_work",
            "args": {"seconds": HANDLER_S}, **fields}
    response = requests.post(cluster.api_url + BASE + "/jobs", json=body, timeout=15)
    assert response.status_code == 201, response.text
    return Watched(job_id, body["schedule"], body.get("misfire_policy", "fire_once"),
                   body.get("overlap_policy", "forbid"))


def stream_jobs(cluster: ChaosCluster, prefix: str, per_combo: int = 1) -> list[Watched]:
    return [create(cluster, f"{prefix}_{misfire}_{overlap}_{n}", misfire_policy=misfire, overlap_policy=overlap)
            for misfire, overlap in product(["fire_all", "fire_once"], ["forbid", "allow"]) for n in range(per_combo)]


def finish(cluster: ChaosCluster, watched: list[Watched], start: datetime, load: ApiLoad) -> Report:
    """Stop the load and the schedulers, let the workers drain, audit the slots up to the
    stop (the load first: a trigger it sent meanwhile would hold a fresh lease)."""
    end = utcnow() - timedelta(seconds=1)
    load.stop()
    cluster.stop_schedulers()
    drained = wait_drained(cluster.store, 60)
    report = audit(cluster.store, cluster.exec_dir, watched, start, end, cluster.faults, load.answers,
                   handler_seconds=HANDLER_S, drained=drained)
    assert drained, "runs still pending, queued or running 60 s after the schedulers stopped"
    return report


def assert_clean(report: Report, *, min_answers: int = 50) -> None:
    assert report.problems == [], "\n".join(report.problems[:40])
    assert report.slots > 0 and report.answers >= min_answers
    assert 500 not in report.statuses


def test_mongodb_sigkilled_and_restarted_mid_stream(make_cluster: Any) -> None:
    """fire_all/fire_once × forbid/allow every 2 s; the store SIGKILLed (no clean
    shutdown) and started again on its data."""
    cluster = make_cluster()
    watched = stream_jobs(cluster, "mongo")
    start = utcnow()
    with ApiLoad(cluster.api_url, [w.job_id for w in watched]) as load:
        time.sleep(5)
        for _ in range(3 if FULL else 1):
            cluster.kill_mongodb_for(10 if FULL else 6)
            time.sleep(8)
        report = finish(cluster, watched, start, load)
    assert_clean(report)
    assert report.statuses.get(503, 0) > 0, "the load saw the outage as 503s"


def test_leader_sigkilled_repeatedly_and_sigstopped_past_its_lease(make_cluster: Any) -> None:
    cluster = make_cluster(schedulers=3)
    watched = stream_jobs(cluster, "leader")
    start = utcnow()
    takeovers = []
    with ApiLoad(cluster.api_url, [w.job_id for w in watched]) as load:
        time.sleep(3)
        for _ in range(20 if FULL else 3):
            takeovers.append(cluster.kill_leader()[1])
            time.sleep(1.5)
        cluster.pause_leader(6)  # lease 3 s: a standby takes over while it is stopped
        time.sleep(6)
        report = finish(cluster, watched, start, load)
    assert_clean(report)
    assert max(takeovers) < 3 + 1 + 2, takeovers  # lease + a renew interval + the standby's retry


def test_worker_sigkilled_mid_run_and_between_handler_end_and_outcome(make_cluster: Any) -> None:
    cluster = make_cluster(workers=3)
    api = cluster.api_url + BASE
    mid = create(cluster, "mid_run", schedule="0 0 1 1 *", args={"seconds": 3}, max_retries=1)
    after = create(cluster, "after_end", schedule="0 0 1 1 *", handler="chaos_die_after",
                   args={"seconds": 0.3, "die_on_attempts": [1]}, max_retries=1)
    lost = create(cluster, "after_end_no_retry", schedule="0 0 1 1 *", handler="chaos_die_after",
                  args={"seconds": 0.3, "die_on_attempts": [1]})
    # killed a few ms after its handler returned: while its outcome may be held by the writer
    returned = create(cluster, "after_return", schedule="0 0 1 1 *", handler="chaos_die_after_return",
                      args={"seconds": 0.3, "die_on_attempts": [1]}, max_retries=1)
    start = utcnow()
    with ApiLoad(cluster.api_url, [mid.job_id, after.job_id, lost.job_id, returned.job_id]) as load:
        run_ids = {}
        for job in (mid, after, lost, returned):
            response = requests.post(f"{api}/jobs/{job.job_id}/trigger", timeout=15)
            assert response.status_code == 202, response.text
            run_ids[job.job_id] = response.json()["run_id"]
        cluster.worker_running(run_ids["mid_run"]).kill()
        final = {}
        for job_id, run_id in run_ids.items():
            final[job_id] = services.wait_for(
                lambda run_id=run_id: (lambda r: r if r["status"] in ("succeeded", "failed", "abandoned") else None)(
                    requests.get(f"{api}/runs/{run_id}", timeout=15).json()), 90, f"{job_id} to finish")
        report = finish(cluster, [], start, load)
    assert final["mid_run"]["status"] == "succeeded" and final["mid_run"]["attempt"] == 2
    assert final["after_end"]["status"] == "succeeded" and final["after_end"]["attempt"] == 2
    assert final["after_end_no_retry"]["status"] == "abandoned"
    ran = executions(cluster.exec_dir)
    assert sorted(e.attempt for e in ran if e.run_id == run_ids["mid_run"]) == [1, 2]
    assert [e.attempt for e in ran if e.run_id == run_ids["after_end_no_retry"]] == [1]  # never twice
    # the outcome landed before the kill (one attempt) or the run was retried (two), one after the
    # other — an attempt may also die before its handler began, with a process another handler killed
    assert final["after_return"]["status"] == "succeeded"
    returned_attempts = sorted(e.attempt for e in ran if e.run_id == run_ids["after_return"])
    assert returned_attempts and returned_attempts[-1] == final["after_return"]["attempt"] <= 2
    assert len(set(returned_attempts)) == len(returned_attempts)  # no attempt ran twice
    assert report.problems == [], "\n".join(report.problems[:40])


def test_rabbitmq_connections_dropped_and_restarted(make_cluster: Any) -> None:
    cluster = make_cluster()
    watched = stream_jobs(cluster, "rabbit")
    start = utcnow()
    with ApiLoad(cluster.api_url, [w.job_id for w in watched]) as load:
        time.sleep(4)
        for _ in range(6 if FULL else 3):
            cluster.drop_rabbitmq_connections()
            time.sleep(4)
        if FULL:
            cluster.restart_rabbitmq()
            time.sleep(10)
        report = finish(cluster, watched, start, load)
    assert_clean(report)


def build_skew_shim(directory: Path) -> Path:
    """The LD_PRELOAD shim that runs one process's wall clock ahead (skew_clock.c)."""
    library = directory / "skew_clock.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(SKEW_SOURCE), "-ldl"], check=True,
                   capture_output=True, timeout=120)
    return library


def test_a_scheduler_whose_clock_is_30_s_ahead(make_cluster: Any, tmp_path: Path) -> None:
    """One scheduler's wall clock runs 30 s ahead (an LD_PRELOAD shim on its
    clock_gettime): it corrects to the database's clock, so as leader it neither
    fires early nor doubles a slot, and standbys do not take its lease early."""
    ahead = {"LD_PRELOAD": str(build_skew_shim(tmp_path)), "CRONHIVE_SKEW_S": "30"}
    cluster = make_cluster(schedulers=2, scheduler_env={1: ahead})
    watched = stream_jobs(cluster, "clock")
    start = utcnow()
    skewed = cluster.of_role("scheduler")[1]
    with ApiLoad(cluster.api_url, [w.job_id for w in watched]) as load:
        for _ in range(6):
            if cluster.leader().pid == skewed.pid:
                break
            cluster.kill_leader()
            time.sleep(1)
        assert cluster.leader().pid == skewed.pid, "the skewed scheduler never led"
        time.sleep(8)
        cluster.kill_leader()  # and hands over to a scheduler with a true clock
        time.sleep(6)
        report = finish(cluster, watched, start, load)
    assert_clean(report)
    early = [run for run in cluster.store.runs.find({"trigger": "schedule", "started_at": {"$ne": None}})
             if run["started_at"] < run["scheduled_for"]]
    assert early == [], [(r["_id"], r["scheduled_for"], r["started_at"]) for r in early[:5]]
    clock_lines = [e for e in skewed.events() if "off the database clock" in str(e.get("event"))]
    assert clock_lines, "the skewed scheduler said its clock is off"


#: How each corrupt job's document is broken (job id suffix, the write, the field its
#: invalid_reason names): written straight into the store while everything runs.
CORRUPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("no_schedule", {"$unset": {"schedule": ""}}, "schedule"),
    ("no_name", {"$unset": {"name": ""}}, "name"),
    ("no_handler", {"$unset": {"handler": ""}}, "handler"),
    ("schedule_int", {"$set": {"schedule": 7}}, "schedule"),
    ("schedule_unparsable", {"$set": {"schedule": "99 * * * *"}}, "schedule"),
    ("bad_timezone", {"$set": {"timezone": "Mars/Olympus_Mons"}}, "timezone"),
    ("policy_int", {"$set": {"overlap_policy": 3}}, "overlap_policy"),
]


def corrupt_now(cluster: ChaosCluster, job_id: str, change: dict[str, Any]) -> None:
    """Break a job's document and make it due at once (as if it were due all along)."""
    now = utcnow()
    write = {**change, "$set": {**change.get("$set", {}), "due_at": now, "next_fire_at": now}}
    assert cluster.store.jobs.update_one({"_id": job_id}, write).matched_count == 1


def test_corrupt_job_documents_written_while_everything_runs(make_cluster: Any) -> None:
    """Job documents broken by hand (a field missing, of the wrong type, an unparsable
    schedule or time zone), documents an old version could have left (no schedule; only
    an id), and a job whose handler no worker has, written straight into the store while
    a ``*/2 s`` stream and the API load (probing the broken jobs: their detail, trigger,
    partial PUT, runs and dashboard pages) run: no 5xx ever; each broken job is shown
    ``invalid``, never fires and is disabled with its reason in one log line; the
    handler-less job's runs fail ``handler_not_found`` at once and it is disabled; the
    other jobs' slots stay exactly-once; a full PUT repairs a broken job, which then fires."""
    cluster = make_cluster()
    watched = stream_jobs(cluster, "healthy")
    api = cluster.api_url + BASE
    corrupt_ids = [create(cluster, f"corrupt_{kind}", schedule="0 0 1 1 *").job_id for kind, _, _ in CORRUPTIONS]
    rounds = 3 if FULL else 1
    probed: list[str] = []
    fields: dict[str, str] = {}
    start = utcnow()
    with ApiLoad(cluster.api_url, [w.job_id for w in watched], probed_job_ids=probed) as load:
        time.sleep(3)
        for round_ in range(rounds):
            for (_, change, field), first_id in zip(CORRUPTIONS, corrupt_ids, strict=True):
                job_id = first_id if round_ == 0 else f"{first_id}_{round_}"
                if round_:
                    create(cluster, job_id, schedule="0 0 1 1 *")
                corrupt_now(cluster, job_id, change)
                fields[job_id] = field
                probed.append(job_id)
                time.sleep(0.5)
            now = utcnow()
            raw = [  # never through the API: an old version's documents
                {"_id": f"raw_old_{round_}", "name": "old", "handler": "chaos_work", "enabled": True, "due_at": now,
                 "next_fire_at": now, "created_at": now, "revision": 1},
                {"_id": f"raw_bare_{round_}", "enabled": True, "due_at": now},
            ]
            cluster.store.jobs.insert_many(raw)
            fields.update({f"raw_old_{round_}": "schedule", f"raw_bare_{round_}": "name"})
            probed.extend(doc["_id"] for doc in raw)
            time.sleep(3)
        cluster.store.jobs.insert_one({  # valid, but its handler was retired from every worker
            "_id": "retired", "name": "retired", "schedule": EVERY_2S, "timezone": "UTC", "handler": "retired_handler",
            "args": {}, "enabled": True, "created_at": utcnow(), "revision": 1, "due_at": utcnow(),
            "next_fire_at": utcnow()})
        time.sleep(4 if FULL else 3)
        repaired_at = utcnow()
        repair = requests.put(f"{api}/jobs/{corrupt_ids[0]}", timeout=15, json={
            "schedule": EVERY_2S, "enabled": True, "args": {"seconds": HANDLER_S}})
        assert repair.status_code == 200 and repair.json()["status"] == "active", repair.text
        probed.remove(corrupt_ids[0])
        time.sleep(5)
        report = finish(cluster, watched, start, load)
    assert_clean(report)
    probes = [a for a in load.answers if any(a.path.startswith(p) for p in
                                             (*(f"/jobs/{j}" for j in fields), "/ui/"))]
    assert len(probes) >= 20 and all(a.status is not None and a.status < 500 for a in probes)

    store = cluster.store
    disabled_lines = [event for proc in cluster.of_role("scheduler") for event in proc.events()
                      if "job disabled" in str(event.get("event"))]
    for job_id, field in fields.items():
        if job_id == corrupt_ids[0]:
            continue
        shown = requests.get(f"{api}/jobs/{job_id}", timeout=15)
        assert shown.status_code == 200, shown.text
        view = shown.json()
        assert view["status"] == "invalid" and f"{field}: " in view["invalid_reason"], view
        assert store.runs.count_documents({"job_id": job_id}) == 0, f"{job_id} fired"
        doc = store.jobs.find_one({"_id": job_id})
        assert doc["enabled"] is False and doc["disabled_reason"].startswith("invalid job document: "), doc
        assert len([e for e in disabled_lines if e.get("job_id") == job_id]) == 1, job_id
    assert store.runs.count_documents({"job_id": corrupt_ids[0], "created_at": {"$lt": repaired_at}}) == 0
    after_repair = list(store.runs.find({"job_id": corrupt_ids[0]}))
    assert after_repair and all(run["status"] == "succeeded" for run in after_repair), after_repair

    retired_runs = list(store.runs.find({"job_id": "retired"}))
    assert 1 <= len(retired_runs) <= 2, retired_runs
    assert all(run["status"] == "failed" and run["error"]["type"] == "handler_not_found" and run["attempt"] == 0
               for run in retired_runs), retired_runs
    retired = store.jobs.find_one({"_id": "retired"})
    assert retired["enabled"] is False and "retired_handler" in retired["disabled_reason"]
    assert all(proc.restarts == 0 for proc in cluster.of_role("scheduler") + cluster.of_role("worker"))
    print(f"\ncorrupt documents: {len(fields)} broken jobs, {report.slots} slots audited, {report.executed} "
          f"fire_all slots executed, {report.answers} API answers {dict(sorted(report.statuses.items(), key=str))}, "
          f"{len(probes)} probes of the broken jobs, {len(disabled_lines)} 'job disabled' lines, "
          f"{len(retired_runs)} handler_not_found run(s)")
