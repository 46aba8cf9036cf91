"""Delivering a job's notifications (README, "Notifications"), from every worker process.

The outbox is the run itself. The update that records a run's outcome (a final
attempt, an abandoned attempt, a skipped run — the scheduler's skipped slots
too) also appends the notifications it raises to the run's ``notifications`` and
sets ``notify_due``: there is no moment at which the outcome is stored and its
notification is not, so a worker that dies right after the outcome loses
nothing, and nothing waits for the delivery (the next run starts as before).

A `Deliverer` thread in each worker process looks every `POLL_S` for runs whose
``notify_due`` has come (sparse index "notify_due", which holds only runs with
deliveries pending) and, per run:

1. **claims** it: ``notify_due`` moved to now + the claim duration by
   compare-and-set on the value read — of several processes one wins. If the
   winner dies, the claim runs out and another delivers again (at least once;
   ``X-Cronhive-Delivery`` lets the receiver drop duplicates);
2. **POSTs** each pending notification under the destination guard
   (HTTP_HANDLER_ALLOWED_HOSTS, checked after DNS resolution, no redirects), the
   body signed with NOTIFY_SECRET when set;
3. **records** each delivery's outcome on the run (attempts, response status,
   error, ``delivered_at``) and the next ``notify_due``: a failed delivery is tried
   again after NOTIFY_BACKOFF_MS × 2^(attempt-1) (at most 10 minutes), and after
   NOTIFY_MAX_ATTEMPTS it is recorded ``failed``. Once none is pending
   ``notify_due`` is removed. This write is fenced on the claim, so a deliverer
   whose claim ran out changes nothing.

A skipped slot the scheduler wrote is delivered only once its job has moved past
that slot (the slot was committed, not a draft a dying leader left behind).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from dramatiq import Broker
from dramatiq.middleware import Middleware

from cronhive import metrics
from cronhive.clock import Clock
from cronhive.domain import Notification, Run, notification_payload, whole_ms
from cronhive.enums import DeliveryStatus, RunStatus, Trigger
from cronhive.errors import Unavailable
from cronhive.http_calls import CallError, DestinationGuard, post_json
from cronhive.settings import Settings
from cronhive.store.protocols import WorkerStore

log = logging.getLogger("cronhive.worker.notify")

POLL_S = 1.0
BATCH = 50
MAX_BACKOFF_MS = 600_000
MAX_ERROR_CHARS = 500
SIGNATURE_HEADER = "X-Cronhive-Signature"
EVENT_HEADER = "X-Cronhive-Event"
DELIVERY_HEADER = "X-Cronhive-Delivery"


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>`` keyed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, base_ms: int) -> timedelta:
    return timedelta(milliseconds=min(MAX_BACKOFF_MS, base_ms * 2 ** max(attempts - 1, 0)))


class Deliverer:
    """Claims and delivers due notifications (see the module docstring)."""

    def __init__(self, store: WorkerStore, clock: Clock, settings: Settings, guard: DestinationGuard | None = None,
                 *, ca_certs: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.guard = guard if guard is not None else settings.destination_guard()
        self.ca_certs = ca_certs
        self.timeout_s = float(settings.notify_timeout_s)
        self.claim = timedelta(seconds=self.timeout_s * 2 + 5)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.run_once()
            except Unavailable as exc:
                log.warning("notification pass skipped: %s", exc.message)
            except Exception:
                log.exception("notification pass failed")

    def run_once(self) -> int:
        """One pass over the due runs; how many runs' deliveries this process recorded."""
        done = 0
        for run in self.store.due_notifications(self.clock.now(), BATCH):
            if self._stop.is_set():
                break
            committed, job_name = self._committed(run)
            if not committed:
                continue
            until = whole_ms(self.clock.now() + self.claim)
            if not self.store.claim_notifications(run, until):
                continue  # another process took it
            updated, next_due = self.deliver(run, job_name)
            if self.store.record_deliveries(run.run_id, until, updated, next_due):
                done += 1
            else:
                log.warning("notification claim ran out before its outcome was recorded; it is delivered again",
                            extra={"run_id": run.run_id, "job_id": run.job_id})
        return done

    def _committed(self, run: Run) -> tuple[bool, str | None]:
        """Whether the run's notifications may go out, and the job's name (None: the job is
        gone). Not yet for a scheduler's skipped slot whose job has not moved past it (an
        uncommitted draft)."""
        job = self.store.find_job(run.job_id)
        if job is None:
            return True, None
        draft = (run.trigger == Trigger.SCHEDULE and run.status == RunStatus.SKIPPED and run.sched_term is not None
                 and run.scheduled_for is not None and job.next_fire_at is not None
                 and job.next_fire_at <= run.scheduled_for)
        return not draft, job.name

    def deliver(self, run: Run, job_name: str | None) -> tuple[tuple[Notification, ...], datetime | None]:
        """Try each pending notification once; the notifications as they now are and when to
        look again (None: none pending)."""
        updated: list[Notification] = []
        next_due: datetime | None = None
        for notification in run.notifications:
            if notification.status != DeliveryStatus.PENDING:
                updated.append(notification)
                continue
            attempted = self._attempt(run, notification, job_name)
            updated.append(attempted)
            if attempted.status == DeliveryStatus.PENDING:
                at = whole_ms(self.clock.now() + backoff(attempted.attempts, self.settings.notify_backoff_ms))
                next_due = at if next_due is None else min(next_due, at)
        return tuple(updated), next_due

    def _attempt(self, run: Run, notification: Notification, job_name: str | None) -> Notification:
        payload = notification_payload(run, notification, job_name or notification.job_name)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers: dict[str, str] = {**notification.headers, EVENT_HEADER: str(notification.event),
                                   DELIVERY_HEADER: f"{run.run_id}:{notification.event}"}
        if self.settings.notify_secret:
            headers[SIGNATURE_HEADER] = signature(self.settings.notify_secret, body)
        attempts = notification.attempts + 1
        extra: dict[str, Any] = {"run_id": run.run_id, "job_id": run.job_id, "event": str(notification.event),
                                 "attempt": attempts}
        status: int | None = None
        try:
            response = post_json(notification.url, body, headers, self.guard, self.timeout_s, ca_certs=self.ca_certs)
            status = response.status
            error = None if 200 <= status < 300 else f"{notification.url} answered {status}"
        except CallError as exc:
            error = f"{exc.error_type}: {exc}"
        except Exception as exc:  # never let one bad destination stop the deliverer
            error = f"{type(exc).__name__}: {exc}"
        now = self.clock.now()
        if error is None:
            metrics.NOTIFICATIONS.labels(event=notification.event, outcome="delivered").inc()
            log.info("notification delivered (%s)", status, extra=extra)
            return replace(notification, status=DeliveryStatus.DELIVERED, attempts=attempts, last_attempt_at=now,
                           delivered_at=now, response_status=status, error=None)
        final = attempts >= self.settings.notify_max_attempts
        metrics.NOTIFICATIONS.labels(event=notification.event, outcome="failed" if final else "retried").inc()
        (log.error if final else log.warning)("notification %s: %s", "given up" if final else "not delivered",
                                              error, extra=extra)
        return replace(notification, status=DeliveryStatus.FAILED if final else DeliveryStatus.PENDING,
                       attempts=attempts, last_attempt_at=now, response_status=status, error=error[:MAX_ERROR_CHARS])


class Notifications(Middleware):
    """Runs the `Deliverer` thread for the life of the worker process."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.deliverer.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.deliverer.stop()
