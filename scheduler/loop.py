"""The scheduler process's main loop: leadership, dispatch passes and sleeping.

Each step: read the database clock; let `Leadership.maintain` renew, claim or
step down and heartbeat as due; as leader, run one `Dispatcher.run_pass` and, every 30 s, start the slot audit
(`cronhive.scheduler.audit`) in a thread of its own. Then
sleep until the earliest of

* the next due instant (the earliest ``due_at``, index "due"),
* the leadership's next action (renewal, claim attempt, heartbeat),
* the RabbitMQ retry time while a backlog waits,
* a short cap (``SCHEDULER_MAX_SLEEP_MS``, so new and changed jobs are seen),

or not at all when a full batch suggests more is due. `stop` (SIGTERM/SIGINT)
wakes the sleep at once; the loop then resigns (releases the lease so a standby
takes over immediately, removes its heartbeat) and returns.

Faults never end the loop. MongoDB unreachable: one error line, then retries
with backoff (0.5 s doubling to 5 s) and one line when it is back; a leader that
cannot renew stops at its local deadline. On return, the due jobs are planned
again and each one's misfire policy decides what the missed slots become. A
lost leadership (`LeadershipLost`) aborts the pass before its next write.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from cronhive.broker import RunPublisher
from cronhive.clock import Clock
from cronhive.errors import StoreUnavailable
from cronhive.scheduler.audit import SlotAuditor
from cronhive.scheduler.dispatcher import Dispatcher
from cronhive.scheduler.leadership import Leadership, LeadershipLost
from cronhive.scheduler.metrics import SchedulerMetrics
from cronhive.settings import Settings, redact_url
from cronhive.store.protocols import SchedulerStore

log = logging.getLogger("cronhive.scheduler")

STORE_BACKOFF_MIN_S = 0.5
STORE_BACKOFF_MAX_S = 5.0
#: After an unexpected error (a bug), wait at least this long before the next step.
ERROR_BACKOFF_S = 1.0
#: How long a stopping scheduler waits for a running slot audit.
AUDIT_JOIN_S = 5.0
#: A job changed while being dispatched is planned again after this pause.
CHANGED_RETRY_S = 0.02
#: Inside the lookahead of a job that could not be planned ahead, look again this often.
LOOKAHEAD_POLL_S = 0.25


class SchedulerLoop:
    """One scheduler process: standby or leader. Owns none of the clients it is given."""

    def __init__(self, settings: Settings, store: SchedulerStore, publisher: RunPublisher, clock: Clock,
                 holder: str, *, metrics: SchedulerMetrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.metrics = metrics or SchedulerMetrics()
        self.leadership = Leadership(store, holder, settings.leader_lease_s)
        self.dispatcher = Dispatcher(store, publisher, clock, self.leadership.guard,
                                     job_lease_s=settings.job_lease_s, batch=settings.scheduler_batch,
                                     metrics=self.metrics, lookahead_s=settings.scheduler_lookahead_ms / 1000)
        self.auditor = SlotAuditor(store, clock, self._leader_term, self.metrics)
        self._audit_thread: threading.Thread | None = None
        self.max_sleep = timedelta(milliseconds=settings.scheduler_max_sleep_ms)
        self.stopping = threading.Event()
        self.store_down = False
        self._store_backoff = STORE_BACKOFF_MIN_S
        self._term_seen: int | None = None

    @property
    def holder(self) -> str:
        return self.leadership.holder

    def stop(self) -> None:
        """Ask the loop to finish its step, resign and return (signal-handler safe)."""
        self.stopping.set()

    def run(self) -> None:
        log.info("scheduler started", extra={"holder": self.holder})
        try:
            while not self.stopping.is_set():
                self.stopping.wait(self.step())
        finally:
            if self._audit_thread is not None:
                self._audit_thread.join(AUDIT_JOIN_S)
            self._withdraw_planned()
            self.leadership.resign(self.clock.now())
            self.metrics.leadership(False, None)
            log.info("scheduler stopped", extra={"holder": self.holder})

    def step(self) -> float:
        """One round; returns how long to sleep (seconds)."""
        try:
            delay = self._step()
        except StoreUnavailable as exc:
            delay = self._store_failed(exc)
        except LeadershipLost as exc:
            log.warning("pass aborted: %s", exc, extra={"holder": self.holder})
            delay = 0.0
        except Exception:  # a bug must not end the loop: log it and go on
            log.exception("unexpected error in the scheduler loop", extra={"holder": self.holder})
            delay = ERROR_BACKOFF_S
        else:
            self._store_ok()
        self._observe_role()
        return delay

    def _step(self) -> float:
        now = self.clock.now()
        self.leadership.expire(now)
        self._observe_role()
        self.leadership.maintain(now)
        self._observe_role()
        wake = [now + self.max_sleep]
        pause = 0.0
        if self.leadership.is_leader(self.clock.now()):
            result = self.dispatcher.run_pass()
            if result.more:
                return 0.0
            self._audit()
            if result.changed:  # plan it again soon, but never spin on a job that keeps changing
                pause = CHANGED_RETRY_S
            due = self._earliest_due(now)
            if due is not None:
                wake.append(self._plan_at(due, now))
            planned = self.dispatcher.wake_at()
            if planned is not None:
                wake.append(planned)
            retry_in = self.dispatcher.broker_retry_in()
            if retry_in is not None:
                wake.append(now + timedelta(seconds=retry_in))
        action = self.leadership.next_action_at()
        if action is not None:
            wake.append(action)
        return max(pause, self._seconds_until(min(wake)))

    def _withdraw_planned(self) -> None:
        """Stopping as the leader: hand the slots planned ahead back to their jobs."""
        try:
            if self.leadership.is_leader(self.clock.now()):
                self.dispatcher.withdraw_planned()
        except Exception:  # the next leader publishes them at their slot instead
            log.warning("could not withdraw the runs planned ahead; the next leader publishes them",
                        exc_info=True, extra={"holder": self.holder})

    def _earliest_due(self, now: datetime) -> datetime | None:
        """The earliest ``due_at`` that can bring the next wake before ``now`` + the longest
        sleep, or None. Looked for among the jobs due by the horizon in effect after that
        sleep, and only when none is, by the furthest a crowd's horizon stretches (a crowd
        is planned earlier: `Dispatcher.plan_from`); a job due later than that leaves the
        wake at the longest sleep whatever its instant. Two bounded reads, not one over
        every enabled job: on SecantusDB a read costs every document it matches."""
        after_sleep = now + self.max_sleep
        due = self.store.earliest_due_by(after_sleep + self.dispatcher.horizon)
        if due is None and self.dispatcher.lookahead and self.dispatcher.max_horizon > self.dispatcher.horizon:
            due = self.store.earliest_due_by(after_sleep + self.dispatcher.max_horizon)
        return due

    def _plan_at(self, due: datetime, now: datetime) -> datetime:
        """When to look again for a job due at ``due``: the lookahead before it (further
        ahead for a crowd due together: `Dispatcher.plan_from`); once inside the lookahead
        (a job that could not be planned ahead: its lease is held), every
        `LOOKAHEAD_POLL_S` until its instant."""
        ahead = self.dispatcher.plan_from(due)
        if ahead > now:
            return ahead
        return min(due, now + timedelta(seconds=LOOKAHEAD_POLL_S))

    def _leader_term(self) -> int | None:
        """The term held now, for the audit thread (reads only: never renews)."""
        return self.leadership.term if self.leadership.is_leader(self.clock.now()) else None

    def _audit(self) -> None:
        """Start the slot audit (`cronhive.scheduler.audit`) in its thread when due and
        none runs: its reads never hold up dispatching."""
        if not self.auditor.due() or (self._audit_thread is not None and self._audit_thread.is_alive()):
            return
        self._audit_thread = threading.Thread(target=self._run_audit, name="slot-audit", daemon=True)
        self._audit_thread.start()

    def _run_audit(self) -> None:
        try:
            self.auditor.audit()
        except (StoreUnavailable, LeadershipLost) as exc:
            log.info("slot audit skipped: %s", exc, extra={"holder": self.holder})
        except Exception:  # a bug in the audit never stops the scheduler
            log.exception("slot audit failed", extra={"holder": self.holder})

    def _observe_role(self) -> None:
        """Tell the dispatcher and the metrics when the term held changed (elected,
        re-elected with a new term, stepped down), wherever in a step that happened."""
        term = self.leadership.term
        if term == self._term_seen:
            return
        if term is not None:
            self.dispatcher.take_over()
        else:
            self.dispatcher.step_down()
        self.metrics.leadership(term is not None, term if term is not None else self._term_seen)
        self._term_seen = term

    def _seconds_until(self, at: datetime) -> float:
        return max(0.0, (at - self.clock.now()).total_seconds())

    def _store_failed(self, exc: StoreUnavailable) -> float:
        if not self.store_down:
            log.error("%s; retrying (a leader stops publishing at its lease's local deadline)",
                      exc.message, extra={"holder": self.holder, "url": redact_url(self.settings.mongodb_uri)})
            self.store_down = True
            self._store_backoff = STORE_BACKOFF_MIN_S
        else:
            self._store_backoff = min(self._store_backoff * 2, STORE_BACKOFF_MAX_S)
        self.leadership.expire(self.clock.now())
        return self._store_backoff

    def _store_ok(self) -> None:
        if self.store_down:
            log.info("MongoDB is reachable again", extra={"holder": self.holder,
                                                          "url": redact_url(self.settings.mongodb_uri)})
            self.store_down = False
