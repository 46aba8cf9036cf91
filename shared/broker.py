"""Publishing runs onto RabbitMQ by actor name (the scheduler and the API).

Publishers never import handler or worker code: a run is a `dramatiq.Message`
addressed to the actor name `RUN_ACTOR` on the runs queue, enqueued on a
`RabbitmqBroker` with publisher confirms, so `publish_run` returns only after
RabbitMQ confirmed the message (or raises `BrokerUnavailable`); `publish_runs`
puts a batch in flight at once and reports which were confirmed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import ConnectionError as DramatiqConnectionError

from cronhive.confirms import PipelinedPublisher
from cronhive.errors import BrokerUnavailable
from cronhive.settings import Settings, redact_url
from cronhive.snapshots import SNAPSHOT_OPTION, JobSnapshot

log = logging.getLogger("cronhive.broker")

#: The worker's actor that executes one run; addressed by name only.
RUN_ACTOR = "execute_run"
#: The same actor on the runs queue's *hand-on queue* (`hand_on_queue`): the message a run
#: that frees its job's lease publishes for the next waiting slot (`RunLifecycle._hand_on`)
#: goes there, and a worker takes it before what its runs queue holds (the actor's
#: priority), so a queue of slots moves on at once instead of a runs-queue backlog later.
RUN_NEXT_ACTOR = "execute_run_next"
RUN_ACTORS = frozenset({RUN_ACTOR, RUN_NEXT_ACTOR})
HAND_ON_SUFFIX = ".next"
#: Message option of a ``fire_all`` slot run published behind an older slot run of its
#: job that is not started (`run_message`): the run starts when the lease is handed on
#: to it, so its delivery is acknowledged without reading anything.
BEHIND_OPTION = "cronhive_behind"


def hand_on_queue(runs_queue: str) -> str:
    """The hand-on queue of ``runs_queue``."""
    return runs_queue + HAND_ON_SUFFIX


def runs_queue_of(queue: str) -> str:
    """The runs queue a message's queue belongs to (itself, or the one whose hand-on queue it is)."""
    return queue[:-len(HAND_ON_SUFFIX)] if queue.endswith(HAND_ON_SUFFIX) else queue

#: pika connection defaults: fail fast instead of retrying for minutes.
_CONNECTION_DEFAULTS = {
    "connection_attempts": "1",
    "socket_timeout": "3",
    "blocked_connection_timeout": "10",
    "heartbeat": "30",
}


def amqp_url(url: str) -> str:
    """``url`` with pika timeouts filled in where the URL does not set them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in _CONNECTION_DEFAULTS.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def make_broker(settings: Settings, middleware: list[Any] | None = None) -> RabbitmqBroker:
    """A RabbitmqBroker with publisher confirms. Does not connect until used."""
    return RabbitmqBroker(url=amqp_url(settings.rabbitmq_url), confirm_delivery=True, middleware=middleware or [])


def run_message(queue: str, run_id: str, job_id: str, snapshot: JobSnapshot | None = None, *,
                behind: bool = False) -> dramatiq.Message[Any]:
    """The message that asks a worker to execute ``run_id`` (readable JSON on the queue),
    with its job's snapshot when the publisher has one (`cronhive.snapshots`), or marked
    `BEHIND_OPTION` (``behind``)."""
    options: dict[str, Any] = {}
    if snapshot is not None:
        options[SNAPSHOT_OPTION] = snapshot.to_option()
    if behind:
        options[BEHIND_OPTION] = True
    return dramatiq.Message(queue_name=queue, actor_name=RUN_ACTOR, args=(run_id,), kwargs={"job_id": job_id},
                            options=options)


@dataclass(frozen=True)
class Published:
    """What became of a batch of runs: the confirmed ones, and whether any was not."""

    confirmed: list[str]
    #: The first failure (the runs not confirmed stay pending and are published again).
    failure: BrokerUnavailable | None = None


class RunPublisher:
    """Publishes runs with confirms — one at a time (`publish_run`, the API's trigger) or
    a batch in flight at once (`publish_runs`, the scheduler: `cronhive.confirms`) —
    and owns nothing but the broker it was given or made."""

    def __init__(self, broker: RabbitmqBroker, queue: str, *, url: str = "", owns_broker: bool = False,
                 connection_name: str = "cronhive-publisher") -> None:
        self.broker = broker
        self.queue = queue
        self.url = url
        self.owns_broker = owns_broker
        self.connection_name = connection_name
        self._pipelined: PipelinedPublisher | None = None

    @classmethod
    def open(cls, settings: Settings, connection_name: str = "cronhive-publisher") -> RunPublisher:
        return cls(make_broker(settings), settings.runs_queue, url=settings.rabbitmq_url, owns_broker=True,
                   connection_name=connection_name)

    def publish_run(self, run_id: str, job_id: str) -> None:
        """Publish and wait for RabbitMQ's confirm; `BrokerUnavailable` otherwise."""
        try:
            self.broker.enqueue(run_message(self.queue, run_id, job_id))
        except (DramatiqConnectionError, pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"RabbitMQ is unreachable at {redact_url(self.url)}: {type(exc).__name__}") from exc

    def publish_runs(self, runs: Sequence[tuple[str, str]], timeout_s: float = 10.0, *,
                     snapshots: Mapping[str, JobSnapshot] | None = None,
                     behind: Collection[str] = ()) -> Published:
        """Publish ``(run_id, job_id)`` pairs in order, all in flight at once on one
        confirm-mode channel, each with its job's snapshot when ``snapshots`` has one, and
        marked `BEHIND_OPTION` when in ``behind``; returns the run ids RabbitMQ confirmed."""
        if not runs:
            return Published([])
        if self._pipelined is None:
            self._pipelined = PipelinedPublisher(amqp_url(self.url), declare=self._declare,
                                                 connection_name=self.connection_name)
        known = snapshots or {}
        messages = [run_message(self.queue, run_id, job_id, known.get(run_id), behind=run_id in behind)
                    for run_id, job_id in runs]
        run_of = {message.message_id: run_id for message, (run_id, _) in zip(messages, runs, strict=True)}
        result = self._pipelined.publish(messages, timeout_s)
        failure = None
        if result.unconfirmed:
            why = result.error or f"{len(result.unconfirmed)} message(s) not confirmed"
            failure = BrokerUnavailable(f"RabbitMQ is unreachable at {redact_url(self.url)}: {why}")
        return Published([run_of[message_id] for message_id in result.confirmed], failure)

    def _declare(self, queue: str) -> None:
        """Declare ``queue`` (and its delay and dead-letter queues) as the workers' broker does."""
        try:
            self.broker.declare_queue(queue, ensure=True)
        except (DramatiqConnectionError, pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"RabbitMQ is unreachable at {redact_url(self.url)}: {type(exc).__name__}") from exc

    def ping(self) -> None:
        """Check RabbitMQ answers (declares the runs queue)."""
        try:
            self.broker.declare_queue(self.queue, ensure=True)
        except (DramatiqConnectionError, pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"RabbitMQ is unreachable at {redact_url(self.url)}: {type(exc).__name__}") from exc

    def close(self) -> None:
        if self._pipelined is not None:
            self._pipelined.close()
        if self.owns_broker:
            try:
                self.broker.close()
            except Exception:  # closing a dead connection must not mask shutdown
                log.debug("error closing broker", exc_info=True)
