"""``/metrics`` of the real API (gunicorn, two workers), scheduler and worker
(two dramatiq processes) processes: the series SPEC §6 lists exist and move, and
agree with what MongoDB recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from cronhive.broker import RunPublisher
from cronhive.dispatch import new_run
from cronhive.domain import new_run_id, utcnow
from cronhive.enums import RunStatus, Trigger
from cronhive.store.documents import run_to_doc
from cronhive.worker.maintenance import REAPER_LEASE_ID
from tests.ops.conftest import System, wait_for

pytestmark = pytest.mark.slow

JOB_ROUTE = "/api/v1/cron/jobs/<job_id>"


def test_api_counts_requests_by_route_and_status_with_latency(system: System) -> None:
    for _ in range(20):
        system.call("GET", "/handlers", 200)
    system.call("GET", "/jobs/tick", 200)
    system.call("GET", "/jobs/no_such_job", 404)
    system.call("POST", "/jobs", 422, json={"job_id": "bad"})

    samples = system.scrape_api()
    # exactly 20, summed over gunicorn's two worker processes (multiprocess mode)
    assert samples.get("cronhive_api_requests_total", route="/api/v1/cron/handlers", method="GET", status="200") == 20
    assert samples.get("cronhive_api_request_duration_seconds_count", route="/api/v1/cron/handlers", method="GET") == 20
    assert samples.get("cronhive_api_requests_total", route=JOB_ROUTE, method="GET", status="200") == 1
    assert samples.get("cronhive_api_requests_total", route=JOB_ROUTE, method="GET", status="404") == 1
    assert samples.get("cronhive_api_requests_total", route="/api/v1/cron/jobs", method="POST", status="422") == 1
    # every job created and run triggered through the API so far
    created = system.store.jobs.count_documents({})
    assert samples.get("cronhive_api_requests_total", route="/api/v1/cron/jobs", method="POST", status="201") == created
    triggered = system.count_runs(trigger="manual")
    assert samples.get("cronhive_api_requests_total", route=f"{JOB_ROUTE}/trigger", method="POST", status="202") == triggered
    assert samples.get("cronhive_api_request_duration_seconds_bucket", route=JOB_ROUTE, method="GET", le="+Inf") == 2
    assert samples.total("cronhive_api_request_duration_seconds_sum", route="/api/v1/cron/handlers") > 0
    # route labels are URL rules, never raw paths: bounded label values
    routes = samples.label_values("cronhive_api_requests_total", "route")
    assert not any("tick" in route or "no_such_job" in route for route in routes), routes
    # the API exposes its own series only
    assert not {name for name in samples.names() if name.startswith(("cronhive_scheduler_", "cronhive_worker_"))}


def test_scheduler_reports_leadership_fires_lateness_missed_and_skipped_slots(system: System) -> None:
    # a run is marked queued after its confirm, and counted fired at the confirm: between the two
    at_least = system.count_runs(trigger="schedule", status={"$nin": ["pending", "skipped"]})
    samples = system.scrape_scheduler()
    at_most = system.count_runs(trigger="schedule", status={"$ne": "skipped"})

    assert samples.get("cronhive_scheduler_is_leader") == 1
    assert samples.get("cronhive_scheduler_term") >= 1
    fired = samples.get("cronhive_scheduler_slots_fired_total")
    assert at_least <= fired <= at_most and fired >= 4  # tick (3+) and gap (1)
    # one lateness observation per confirmed slot, slot instant to publish confirm
    assert samples.get("cronhive_scheduler_fire_lateness_seconds_count") == fired
    assert samples.get("cronhive_scheduler_fire_lateness_seconds_bucket", le="+Inf") == fired
    assert samples.get("cronhive_scheduler_fire_lateness_seconds_sum") > 0
    # the gap job was disabled for 2.5 s: its missed slots are counted, one is recorded skipped
    misfire_runs = system.count_runs(trigger="schedule", status="skipped", **{"error.type": "misfire"})
    assert samples.get("cronhive_scheduler_slots_skipped_total", reason="misfire") == misfire_runs >= 1
    assert samples.get("cronhive_scheduler_slots_missed_total") >= misfire_runs
    assert samples.get("cronhive_scheduler_unpublished_runs") == 0
    assert not {name for name in samples.names() if name.startswith(("cronhive_api_", "cronhive_worker_"))}


def test_unpublished_backlog_grows_while_rabbitmq_refuses_the_scheduler_and_drains_after(system: System) -> None:
    """RabbitMQ refuses the scheduler's user (permissions revoked, connections closed):
    slots are committed ``pending``, the backlog gauge shows them; access restored,
    they are published in order and the gauge returns to zero."""
    system.create_job("backlog", schedule="* * * * * *", overlap_policy="allow")
    user = system.scheduler_user
    before = system.scrape_scheduler().get("cronhive_scheduler_slots_fired_total")
    try:
        wait_for(lambda: system.count_runs(job_id="backlog", status={"$in": ["queued", "running", "succeeded"]}),
                 10, "the backlog job's first published run")
        system.management.revoke(user.name)
        backlog = wait_for(lambda: (system.scrape_scheduler().get("cronhive_scheduler_unpublished_runs") or 0) >= 2
                           and system.scrape_scheduler(), 15, "the unpublished-runs gauge to reach 2", interval_s=0.25)
        # the slots that have come (runs planned ahead of their instant are pending too)
        pending = system.count_runs(job_id="backlog", status="pending", scheduled_for={"$lte": utcnow()})
        assert pending >= 2
        assert backlog.get("cronhive_scheduler_is_leader") == 1  # still the leader: MongoDB is fine
    finally:
        system.management.grant(user.name)
    wait_for(lambda: system.scrape_scheduler().get("cronhive_scheduler_unpublished_runs") == 0, 20,
             "the backlog to drain", interval_s=0.25)
    system.set_enabled("backlog", False)
    system.wait_quiet()
    assert system.count_runs(job_id="backlog", status="pending") == 0
    after = system.scrape_scheduler()
    assert after.get("cronhive_scheduler_slots_fired_total") >= before + pending
    # the refusal was logged once, naming the URL without its password
    refused = [event for event in system.scheduler.events() if "RabbitMQ is unreachable" in event["event"]]
    assert refused and f"{user.name}:***@" in refused[0]["event"]
    assert user.password not in system.scheduler.output()


@contextmanager
def reaper_paused(system: System) -> Iterator[None]:
    """Hold the workers' reaper lease (``leases/worker-reaper``) for the test, so the only
    one to notice a lost lease is the worker running the attempt (its lease keeper)."""
    now = utcnow()
    system.store.leases.update_one({"_id": REAPER_LEASE_ID}, [
        {"$set": {"lease_term": {"$add": [{"$ifNull": ["$lease_term", 0]}, 1]}}},
        {"$set": {"lease": {"holder": "ops-test", "run_id": None, "token": "$lease_term",
                            "expires_at": now + timedelta(seconds=60)}}},
    ], upsert=True)
    try:
        yield
    finally:
        system.store.leases.update_one({"_id": REAPER_LEASE_ID, "lease.holder": "ops-test"},
                                       {"$set": {"lease.expires_at": utcnow() - timedelta(seconds=1)}})


def test_a_lost_lease_counts_a_renew_failure_and_an_abandoned_run(system: System) -> None:
    system.create_job("stolen", handler="sleep", args={"seconds": 5}, enabled=False)
    before = system.scrape_worker()
    with reaper_paused(system):
        run_id = system.trigger("stolen")
        system.wait_run(run_id, ("running",))
        job = system.store.jobs.find_one({"_id": "stolen"})
        # another holder takes the job lease over: the worker's next renewal finds it gone
        system.store.jobs.update_one({"_id": "stolen"}, {"$set": {"lease.holder": "thief:1", "lease.run_id": "thief",
                                                                  "lease.token": job["lease"]["token"] + 100}})
        run = system.wait_run(run_id, timeout_s=10)
        assert run["status"] == "abandoned" and run["error"]["type"] == "lease_lost"
        abandoned = before.total("cronhive_worker_runs_total", outcome="abandoned") + 1
        samples = wait_for(lambda: (s := system.scrape_worker()).total("cronhive_worker_runs_total", outcome="abandoned")
                           == abandoned and s, 5, "the abandoned run in the worker's metrics")
    failures = before.get("cronhive_worker_lease_renew_failures_total")
    assert samples.get("cronhive_worker_lease_renew_failures_total") >= failures + 1


def test_a_run_the_reaper_abandons_is_counted(system: System) -> None:
    """A run left ``running`` by a dead worker (its job lease expired, no retries left)."""
    now = utcnow()
    system.create_job("ghost", enabled=False)
    run_id = new_run_id(now)
    holder = f"deadhost:1:{run_id}:1:abc123"
    system.store.runs.insert_one({
        **run_to_doc(new_run(system.store.get_job("ghost"), run_id, Trigger.MANUAL, now, now, None, RunStatus.RUNNING)),
        "attempt": 1, "worker": "deadhost:1", "started_at": now, "lease_token": 1, "lease_holder": holder,
        "lease_scope": "job"})
    system.store.jobs.update_one({"_id": "ghost"}, {"$set": {"lease_term": 1, "lease": {
        "holder": holder, "run_id": run_id, "token": 1, "expires_at": now - timedelta(seconds=1)}}})
    before = system.scrape_worker().total("cronhive_worker_runs_total", outcome="abandoned")
    run = system.wait_run(run_id, timeout_s=10)
    assert run["status"] == "abandoned" and run["error"]["type"] == "abandoned"  # by the reaper
    wait_for(lambda: system.scrape_worker().total("cronhive_worker_runs_total", outcome="abandoned") > before, 3,
             "the reaper's abandoned run in the worker's metrics")


def test_one_worker_endpoint_sums_both_worker_processes(system: System) -> None:
    system.wait_quiet()
    workers = {run["worker"] for run in system.store.runs.find({"job_id": "spread"}, {"worker": 1})}
    assert len(workers) == 2, workers  # the six 0.2 s runs were spread over both processes
    pids = {int(worker.rsplit(":", 1)[1]) for worker in workers}
    assert pids <= {int(path.stem.rsplit("_", 1)[1]) for path in system.worker_metrics_dir.glob("counter_*.db")}

    samples = wait_for(lambda: (s := system.scrape_worker()).total("cronhive_worker_runs_total")
                       >= system.count_runs(status={"$in": ["succeeded", "failed"]}) and s,
                       5, "every finished run in the worker's metrics")
    for outcome in ("succeeded", "failed"):
        recorded = system.count_runs(status=outcome)
        assert samples.total("cronhive_worker_runs_total", outcome=outcome) == recorded, outcome
    # abandoned by the worker whose attempt lost its lease (the reaper's are another test's)
    lost = system.count_runs(status="abandoned", **{"error.type": "lease_lost"})
    assert samples.total("cronhive_worker_runs_total", outcome="abandoned") >= lost
    # every attempt's duration is observed: boom failed once, was retried, then failed for good
    retried = samples.get("cronhive_worker_runs_total", outcome="failed_retried")
    assert retried == 1
    finished = system.count_runs(status={"$in": ["succeeded", "failed"]}) + lost
    assert samples.get("cronhive_worker_run_duration_seconds_count") == finished + retried
    assert samples.get("cronhive_worker_run_duration_seconds_sum") >= 6 * 0.2
    assert samples.get("cronhive_worker_lease_renew_failures_total") is not None

    # Dramatiq's own Prometheus middleware, summed over both processes too
    labels = {"queue_name": system.queue, "actor_name": "execute_run"}
    assert samples.get("dramatiq_messages_total", **labels) >= finished + retried
    # boom's two attempts raised, and so did every handler interrupted by a lost lease
    assert samples.get("dramatiq_message_errors_total", **labels) == 2 + lost
    assert samples.get("dramatiq_message_rejects_total", **labels) == 1  # boom dead-lettered once
    assert samples.get("dramatiq_message_duration_milliseconds_count", **labels) >= finished + retried
    assert not {name for name in samples.names() if name.startswith(("cronhive_api_", "cronhive_scheduler_"))}



def test_dramatiq_in_progress_gauge_returns_to_zero_after_a_skipped_message(system: System) -> None:
    system.wait_quiet()
    labels = {"queue_name": system.queue, "actor_name": "execute_run"}
    before = system.scrape_worker().get("dramatiq_messages_total", **labels)
    done = system.store.runs.find_one({"job_id": "spread", "status": "succeeded"})
    publisher = RunPublisher.open(system.settings)
    try:
        publisher.publish_run(done["_id"], "spread")  # a duplicate: acknowledged without running
    finally:
        publisher.close()
    # one scrape reads the processes' files one after another: it can see the message counted
    # and, in a file read just before, still in progress — so the gauge is waited for too
    wait_for(lambda: system.scrape_worker().get("dramatiq_messages_total", **labels) > before, 10,
             "the duplicate message to be processed")
    wait_for(lambda: system.scrape_worker().get("dramatiq_messages_inprogress", **labels) == 0, 5,
             "the in-progress gauge to return to zero")
    assert system.run(done["_id"])["attempt"] == 1  # not run again
