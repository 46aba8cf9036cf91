"""Notifications (issue 12, item 4) in process: the outbox written in the outcome's own
update (`RunLifecycle` against the real store), and the `Deliverer` POSTing to a local
server on 127.0.0.1 — signature, retries with backoff, giving up, the destination guard,
the claim that makes one process deliver, and the events failure, recovery and skipped.
The clock is moved by hand (backoff and claim expiry without sleeping)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from cronhive.domain import Notify, Run, new_run, new_run_id
from cronhive.enums import NotifyEvent, RunStatus, Trigger
from cronhive.handlers import HandlerFailed
from cronhive.worker.maintenance import Reaper
from cronhive.worker.notify import SIGNATURE_HEADER, Deliverer
from tests import hooks
from tests.worker.conftest import LEASE_S, Harness

SECRET = "s3cret-notify-key"
ALL = (NotifyEvent.FAILURE, NotifyEvent.RECOVERY, NotifyEvent.SKIPPED)


@pytest.fixture
def hook() -> Iterator[hooks.Hook]:
    with hooks.serve() as server:
        yield server


def deliverer(harness: Harness, **settings: object) -> Deliverer:
    options = {"notify_secret": SECRET, "notify_max_attempts": 3, "notify_backoff_ms": 1000,
               "notify_timeout_s": 2, "http_handler_allowed_hosts": "127.0.0.1", **settings}
    return Deliverer(harness.store, harness.clock, harness.settings.replace(**options))


def run_once(harness: Harness, run_id: str, *, result: object = None,
             exception: BaseException | None = None) -> None:
    delivery = harness.deliver(run_id)
    assert delivery.begin() is not None
    delivery.end(exception, result=result)


def notify(hook: hooks.Hook, *events: NotifyEvent, path: str = "/hook") -> Notify:
    return Notify(url=hook.url(path), on=events or ALL, headers={"X-Team": "ops"})


def test_a_failure_is_posted_signed_with_every_field_and_its_delivery_recorded(harness: Harness,
                                                                              hook: hooks.Hook) -> None:
    harness.job("nightly", name="Nightly export", notify=notify(hook, NotifyEvent.FAILURE))
    run_id = harness.trigger("nightly").run_id
    run_once(harness, run_id, exception=HandlerFailed("disk full"))

    stored = harness.store.get_run(run_id)  # the outbox: written with the outcome, before any delivery
    assert stored.status == "failed" and stored.notify_due == stored.finished_at
    assert [(n.event, n.status, n.attempts) for n in stored.notifications] == [("failure", "pending", 0)]

    assert deliverer(harness).run_once() == 1
    (request,) = hook.received()
    assert request.method == "POST" and request.path == "/hook"
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert request.headers["X-Team"] == "ops" and request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Cronhive-Event"] == "failure"
    assert request.headers["X-Cronhive-Delivery"] == f"{run_id}:failure"
    body = request.json()
    assert body == {
        "event": "failure", "job_id": "nightly", "job_name": "Nightly export", "run_id": run_id,
        "status": "failed", "scheduled_for": body["scheduled_for"], "finished_at": body["finished_at"],
        "attempt": 1, "error": {"type": "HandlerFailed", "message": "disk full", "traceback": None},
    }
    assert body["finished_at"].endswith("Z")

    run = harness.store.get_run(run_id)
    (delivered,) = run.notifications
    assert (delivered.status, delivered.attempts, delivered.response_status, delivered.error) == (
        "delivered", 1, 200, None)
    assert delivered.delivered_at == harness.clock.now() and run.notify_due is None
    assert "notify_due" not in harness.run(run_id)
    assert deliverer(harness).run_once() == 0 and len(hook.received()) == 1  # delivered once


def test_without_notify_secret_nothing_is_signed(harness: Harness, hook: hooks.Hook) -> None:
    harness.job("plain", notify=notify(hook))
    run_once(harness, harness.trigger("plain").run_id, exception=HandlerFailed("x"))
    deliverer(harness, notify_secret=None).run_once()
    (request,) = hook.received()
    assert SIGNATURE_HEADER not in request.headers


def test_a_failed_delivery_is_retried_with_backoff_then_given_up(harness: Harness, hook: hooks.Hook) -> None:
    hook.routes["/down"] = (503, b"busy")
    harness.job("flappy", notify=notify(hook, path="/down"))
    run_id = harness.trigger("flappy").run_id
    run_once(harness, run_id, exception=HandlerFailed("x"))
    sender = deliverer(harness)

    def count(outcome: str) -> float:
        labels = {"event": "failure", "outcome": outcome}
        return REGISTRY.get_sample_value("cronhive_worker_notifications_total", labels) or 0.0

    before = {outcome: count(outcome) for outcome in ("retried", "failed")}
    sender.run_once()
    run = harness.store.get_run(run_id)
    assert [(n.status, n.attempts, n.response_status) for n in run.notifications] == [("pending", 1, 503)]
    assert "answered 503" in (run.notifications[0].error or "")
    assert run.notify_due == harness.clock.now() + timedelta(seconds=1)
    sender.run_once()
    assert len(hook.received()) == 1  # not due again before its backoff
    harness.clock.advance(1)
    sender.run_once()
    assert harness.store.get_run(run_id).notify_due == harness.clock.now() + timedelta(seconds=2)  # doubled
    harness.clock.advance(2)
    sender.run_once()
    run = harness.store.get_run(run_id)
    assert [(n.status, n.attempts) for n in run.notifications] == [("failed", 3)]
    assert run.notify_due is None and len(hook.received()) == 3
    assert (count("retried") - before["retried"], count("failed") - before["failed"]) == (2, 1)
    harness.clock.advance(3600)
    assert sender.run_once() == 0 and len(hook.received()) == 3


def test_a_destination_the_guard_refuses_is_never_called(harness: Harness, hook: hooks.Hook) -> None:
    harness.job("guarded", notify=notify(hook))
    run_id = harness.trigger("guarded").run_id
    run_once(harness, run_id, exception=HandlerFailed("x"))
    deliverer(harness, http_handler_allowed_hosts="127.0.0.2", notify_max_attempts=1).run_once()
    (notification,) = harness.store.get_run(run_id).notifications
    assert notification.status == "failed" and (notification.error or "").startswith("destination_not_allowed")
    assert hook.received() == []


def test_one_process_delivers_and_a_dead_deliverers_claim_runs_out(harness: Harness, hook: hooks.Hook) -> None:
    harness.job("claimed", notify=notify(hook))
    run_id = harness.trigger("claimed").run_id
    run_once(harness, run_id, exception=HandlerFailed("x"))
    dead, alive = deliverer(harness), deliverer(harness)

    # a deliverer claims the run, then dies before delivering (nothing recorded)
    assert harness.store.claim_notifications(harness.store.get_run(run_id), harness.clock.now() + dead.claim)
    assert alive.run_once() == 0 and hook.received() == []  # claimed: not delivered twice meanwhile
    harness.clock.advance(dead.claim.total_seconds())
    assert alive.run_once() == 1
    assert len(hook.received()) == 1
    assert harness.store.get_run(run_id).notifications[0].status == "delivered"


def test_a_deliverer_whose_claim_ran_out_records_nothing(harness: Harness, hook: hooks.Hook) -> None:
    harness.job("late", notify=notify(hook))
    run_id = harness.trigger("late").run_id
    run_once(harness, run_id, exception=HandlerFailed("x"))
    run = harness.store.get_run(run_id)
    slow = deliverer(harness)
    until = harness.clock.now() + slow.claim
    assert harness.store.claim_notifications(run, until)
    harness.clock.advance(slow.claim.total_seconds())
    assert deliverer(harness).run_once() == 1  # another took over and delivered
    updated, _ = slow.deliver(run, "late")
    assert not harness.store.record_deliveries(run_id, until, updated, None)  # fenced on the claim
    assert harness.store.get_run(run_id).notifications[0].attempts == 1


def test_recovery_is_the_first_success_after_a_failure(harness: Harness, hook: hooks.Hook) -> None:
    harness.job("healing", notify=notify(hook, NotifyEvent.FAILURE, NotifyEvent.RECOVERY))
    sender = deliverer(harness)
    outcomes = [HandlerFailed("1"), HandlerFailed("2"), None, None]
    run_ids = []
    for exception in outcomes:
        run_id = harness.trigger("healing").run_id
        run_once(harness, run_id, exception=exception)
        sender.run_once()
        run_ids.append(run_id)
    events = [(item.json()["event"], item.json()["run_id"], item.json()["status"]) for item in hook.received()]
    assert events == [("failure", run_ids[0], "failed"), ("failure", run_ids[1], "failed"),
                      ("recovery", run_ids[2], "succeeded")]
    assert harness.store.get_run(run_ids[3]).notifications == ()


def test_only_the_events_asked_for_are_sent(harness: Harness, hook: hooks.Hook) -> None:
    harness.job("recovery_only", notify=notify(hook, NotifyEvent.RECOVERY))
    failed = harness.trigger("recovery_only").run_id
    run_once(harness, failed, exception=HandlerFailed("1"))
    assert harness.store.get_run(failed).notifications == ()
    healed = harness.trigger("recovery_only").run_id
    run_once(harness, healed)
    deliverer(harness).run_once()
    assert [item.json()["event"] for item in hook.received()] == ["recovery"]


def test_a_run_the_worker_skips_announces_skipped(harness: Harness, hook: hooks.Hook) -> None:
    job = harness.job("busy", notify=notify(hook, NotifyEvent.SKIPPED))
    running = harness.trigger("busy").run_id
    assert harness.deliver(running).begin() is not None  # holds the job's lease
    slot = harness.clock.now().replace(microsecond=0)
    other = replace(new_run(job, new_run_id(slot), Trigger.SCHEDULE, slot, harness.clock.now(), None),
                    status=RunStatus.QUEUED)
    harness.store.insert_run(other)
    assert harness.deliver(other.run_id).begin() is None
    skipped = harness.store.get_run(other.run_id)
    assert skipped.status == "skipped" and [n.event for n in skipped.notifications] == ["skipped"]
    deliverer(harness).run_once()
    (request,) = hook.received()
    body = request.json()
    assert (body["event"], body["run_id"], body["status"]) == ("skipped", other.run_id, "skipped")
    assert body["error"]["type"] == "overlap"


def test_history_trimming_keeps_a_run_until_its_notifications_are_delivered(harness: Harness,
                                                                           hook: hooks.Hook) -> None:
    hook.routes["/down"] = (500, b"")
    harness.job("trimmed", notify=notify(hook, path="/down"))
    first = harness.trigger("trimmed").run_id
    run_once(harness, first, exception=HandlerFailed("x"))
    for _ in range(3):
        harness.clock.advance(1)
        run_once(harness, harness.trigger("trimmed").run_id)
    harness.store.trim_run_history("trimmed", 1)
    assert harness.store.find_run(first) is not None  # its failure notification is still pending
    deliverer(harness, notify_max_attempts=1).run_once()
    harness.store.trim_run_history("trimmed", 1)
    assert harness.store.find_run(first) is None


def test_a_run_the_reaper_abandons_announces_its_failure(harness: Harness, hook: hooks.Hook) -> None:
    harness.job("dying", name="Dying job", notify=notify(hook, NotifyEvent.FAILURE))
    run_id = harness.trigger("dying").run_id
    assert harness.deliver(run_id).begin() is not None  # then its worker dies

    def republish(run: Run, after_attempt: int) -> None:
        raise AssertionError("no retries left: nothing to republish")

    harness.clock.advance(LEASE_S + 1)
    report = Reaper(harness.store, harness.clock, harness.settings, republish, "host:1").run_once(harness.clock.now())
    assert report is not None and report.abandoned == [run_id]
    assert [n.event for n in harness.store.get_run(run_id).notifications] == ["failure"]
    deliverer(harness).run_once()
    (request,) = hook.received()
    body = request.json()
    assert (body["event"], body["status"], body["job_name"], body["error"]["type"]) == (
        "failure", "abandoned", "Dying job", "abandoned")
