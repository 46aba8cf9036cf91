"""The module the ``dramatiq`` CLI loads (``dramatiq cronhive.worker.broker:setup``).

`setup` is the worker process's start step: it reads the settings, loads the
handler modules, opens MongoDB and builds the `RabbitmqBroker` with the
middleware and the ``execute_run`` actor on the runs queue. Nothing here runs at
import time.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware, TimeLimit

from cronhive import heartbeats
from cronhive.broker import RUN_ACTOR, RUN_NEXT_ACTOR, hand_on_queue, make_broker
from cronhive.clock import Clock, DatabaseClock
from cronhive.domain import Run
from cronhive.handlers import HandlerRegistry, configure_http_handler, load_handler_modules
from cronhive.logs import add_context_provider, configure_logging
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.store.protocols import Connection, WorkerStore
from cronhive.worker.actor import make_execute_run
from cronhive.worker.attempts import current_log_context, worker_name
from cronhive.worker.heartbeat import WorkerHeartbeat
from cronhive.worker.keeper import LeaseKeeper
from cronhive.worker.maintenance import Maintenance, Reaper
from cronhive.worker.middleware import RunLifecycle
from cronhive.worker.notify import Deliverer, Notifications
from cronhive.worker.outages import StoreOutages
from cronhive.worker.records import follow_up_message, hand_on_message

log = logging.getLogger("cronhive.worker")

#: Time limit of a run whose job has no ``timeout_s`` (Dramatiq's default would be 10 minutes).
NO_TIMEOUT_MS = 10 * 365 * 86400 * 1000


class ClosesOnShutdown(Middleware):
    """Closes what `setup` opened once the worker process has shut down."""

    def __init__(self, store: Connection) -> None:
        self.store = store

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.store.close()


def dramatiq_metrics() -> list[Middleware]:
    """Dramatiq's own Prometheus middleware, writing to this process tree's metrics
    directory; its exposition server is replaced by `worker.ops` (one port for all)."""
    from dramatiq.middleware.prometheus import Prometheus

    class DramatiqMetrics(Prometheus):
        @property
        def forks(self) -> list[Any]:
            return []

    return [DramatiqMetrics()]


def build_broker(
    settings: Settings,
    store: WorkerStore,
    clock: Clock,
    registry: HandlerRegistry,
    *,
    worker: str | None = None,
    extra_middleware: list[Middleware] | None = None,
) -> RabbitmqBroker:
    """The worker's broker: `RunLifecycle` first (it sets the time limit `TimeLimit`
    reads, and records outcomes after `TimeLimit` stopped the clock), the reaper,
    and the ``execute_run`` actor on ``settings.runs_queue`` — and on its hand-on queue
    (``execute_run_next``, taken first: `cronhive.broker.RUN_NEXT_ACTOR`)."""
    worker = worker or worker_name()
    outages = StoreOutages(settings.job_lease_s)  # one per process: what any of its threads saw
    keeper = LeaseKeeper(store, clock, settings.job_lease_s, outages)
    middleware: list[Middleware] = [
        RunLifecycle(store, clock, settings, keeper, worker=worker, handlers=frozenset(registry.names()),
                     outages=outages, write_behind=True),
        TimeLimit(time_limit=NO_TIMEOUT_MS, interval=250),
        *(extra_middleware or []),
    ]
    broker = make_broker(settings, middleware=middleware)

    def republish(run: Run, after_attempt: int) -> None:
        broker.enqueue(follow_up_message(settings.runs_queue, run.run_id, run.job_id, after_attempt))

    def hand_on(run_id: str, job_id: str) -> None:
        broker.enqueue(hand_on_message(settings.runs_queue, run_id, job_id))

    broker.add_middleware(Maintenance(Reaper(store, clock, settings, republish, worker, outages, hand_on)))
    broker.add_middleware(Notifications(Deliverer(store, clock, settings)))
    execute_run = make_execute_run(registry, keeper)
    dramatiq.Actor(execute_run, broker=broker, actor_name=RUN_ACTOR, queue_name=settings.runs_queue, priority=0,
                   options={})
    # hand-ons: taken before what the runs queue holds (a lower number goes first)
    dramatiq.Actor(execute_run, broker=broker, actor_name=RUN_NEXT_ACTOR, queue_name=hand_on_queue(settings.runs_queue),
                   priority=-1, options={})
    return broker


def setup() -> RabbitmqBroker:
    """The worker process's start step (called by the dramatiq CLI in each process)."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    # dramatiq warns "Message ... was skipped" for every message RunLifecycle does not
    # start (duplicates, waits); RunLifecycle logs why at info level instead
    logging.getLogger("dramatiq.worker.WorkerThread").setLevel(logging.ERROR)
    registry = load_handler_modules(settings.handler_modules)
    configure_http_handler(settings.destination_guard())
    store = MongoStore.open(settings)
    store.ensure_indexes()
    store.ensure_run_retention(settings.run_history_days)
    heartbeats.ensure_indexes(store)
    clock = DatabaseClock(store)
    # the ids of the attempt a thread runs go on every log line it writes (the handler's too)
    add_context_provider(current_log_context)
    broker = build_broker(settings, store, clock, registry)
    # Dramatiq's metrics before RunLifecycle: a message RunLifecycle skips has passed their
    # before_process_message too, so dramatiq_messages_inprogress goes back down
    for middleware in dramatiq_metrics():
        broker.add_middleware(middleware, before=RunLifecycle)
    # before RunLifecycle: its before_process_message runs ahead of any skip (counts stay right)
    broker.add_middleware(WorkerHeartbeat(store, clock, worker=worker_name(), queue=settings.runs_queue,
                                          handlers=registry.names()), before=RunLifecycle)
    # first in the list, so its after_worker_shutdown runs last
    broker.add_middleware(ClosesOnShutdown(store), before=RunLifecycle)
    dramatiq.set_broker(broker)
    log.info("worker ready on queue %s with handlers %s", settings.runs_queue, ", ".join(registry.names()),
             extra={"worker": worker_name()})
    return broker
