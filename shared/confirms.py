"""Publishing many run messages with pipelined publisher confirms.

`dramatiq`'s `RabbitmqBroker` with ``confirm_delivery`` waits for RabbitMQ's
confirm of each message before it sends the next: one round trip per run.
`PipelinedPublisher` puts a whole batch in flight on one confirm-mode channel
and collects the confirms as they come (RabbitMQ acknowledges several delivery
tags at once with ``multiple``), so a batch of N messages costs about one round
trip. The messages are the very bytes dramatiq would send (`Message.encode`,
persistent, to the same queue), so workers cannot tell the difference.

Guarantees
    A message id is reported *confirmed* only after RabbitMQ's ``basic.ack`` for
    it. Everything else — nacked, unroutable, in flight when the connection or
    channel closed, or not confirmed within the timeout — is reported
    *unconfirmed*: the caller keeps those runs ``pending`` and publishes them
    again later (a duplicate delivery is harmless: workers start one attempt).

Threading
    One daemon thread runs pika's `SelectConnection` I/O loop (heartbeats are
    answered even while nothing is published); `publish` may be called from any
    thread and blocks until its batch is settled. A lost connection is reopened
    on the next `publish`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.select_connection import SelectConnection

log = logging.getLogger("cronhive.confirms")

CONNECT_TIMEOUT_S = 5.0


@dataclass
class Batch:
    """One `publish` call's messages and what became of them."""

    messages: Sequence[dramatiq.Message[Any]]
    confirmed: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    error: str | None = None
    outstanding: dict[int, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settle(self, tag: int, ok: bool) -> None:
        with self.lock:
            message_id = self.outstanding.pop(tag, None)
            if message_id is not None:
                (self.confirmed if ok else self.unconfirmed).append(message_id)
            if not self.outstanding:
                self.done.set()

    def settle_up_to(self, tag: int, ok: bool) -> None:
        """``multiple``: every outstanding tag up to ``tag``."""
        with self.lock:
            for pending in [t for t in self.outstanding if t <= tag]:
                message_id = self.outstanding.pop(pending)
                (self.confirmed if ok else self.unconfirmed).append(message_id)
            if not self.outstanding:
                self.done.set()

    def fail_all(self, why: str) -> None:
        with self.lock:
            self.error = self.error or why
            self.unconfirmed.extend(self.outstanding.values())
            self.outstanding.clear()
            self.done.set()

    def result(self) -> PublishResult:
        with self.lock:
            return PublishResult(list(self.confirmed), list(self.unconfirmed), self.error)


@dataclass(frozen=True)
class PublishResult:
    confirmed: list[str]
    unconfirmed: list[str]
    error: str | None = None


class PipelinedPublisher:
    """Publishes batches of dramatiq messages to one queue with pipelined confirms.

    ``declare`` is called once per connection before the first publish on it:
    it must declare the queue exactly as the workers' broker does (pass the
    dramatiq broker's ``declare_queue``), so the arguments always agree.
    """

    def __init__(self, url: str, *, declare: Callable[[str], Any] | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, connection_name: str = "cronhive-publisher") -> None:
        self.url = url
        self.declare = declare
        self.connection_name = connection_name
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()  # one batch in flight at a time
        self._connection: SelectConnection | None = None
        self._channel: pika.channel.Channel | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: str | None = None
        self._next_tag = 0
        self._batch: Batch | None = None
        self._declared: set[str] = set()

    # -- the I/O thread --------------------------------------------------------------

    def _open(self) -> None:
        """Open a connection and a confirm-mode channel (blocks up to the timeout)."""
        self._ready.clear()
        self._open_error = None
        self._next_tag = 0
        params = pika.URLParameters(self.url)
        params.client_properties = {"connection_name": self.connection_name}
        connection = SelectConnection(params, on_open_callback=self._on_connection_open,
                                      on_open_error_callback=self._on_open_error,
                                      on_close_callback=self._on_connection_closed)
        self._connection = connection
        self._thread = threading.Thread(target=connection.ioloop.start, name="confirms-io", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.connect_timeout_s):
            self._shutdown()
            raise ConnectionError(f"RabbitMQ did not open a channel within {self.connect_timeout_s:g} s")
        if self._open_error is not None:
            error = self._open_error
            self._shutdown()
            raise ConnectionError(error)

    def _on_connection_open(self, connection: SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection: SelectConnection, error: BaseException | str) -> None:
        self._open_error = f"cannot connect to RabbitMQ: {error}"
        self._ready.set()
        connection.ioloop.stop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: self._ready.set())

    def _on_confirm(self, frame: pika.frame.Method[Any]) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        batch = self._batch
        if batch is None:
            return
        tag = int(method.delivery_tag)
        if method.multiple:
            batch.settle_up_to(tag, ok)
        else:
            batch.settle(tag, ok)

    def _on_return(self, channel: pika.channel.Channel, method: pika.spec.Basic.Return,
                   properties: pika.spec.BasicProperties, body: bytes) -> None:
        """Unroutable (the queue vanished): RabbitMQ still acks it; count it unconfirmed."""
        batch = self._batch
        message_id = getattr(properties, "message_id", None)
        if batch is not None and message_id:
            with batch.lock:
                tags = [tag for tag, pending in batch.outstanding.items() if pending == message_id]
            for tag in tags:
                batch.settle(tag, False)

    def _on_channel_closed(self, channel: pika.channel.Channel, reason: BaseException) -> None:
        self._channel = None
        if self._batch is not None:
            self._batch.fail_all(f"channel closed: {reason}")
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _on_connection_closed(self, connection: SelectConnection, reason: BaseException) -> None:
        self._channel = None
        if self._batch is not None:
            self._batch.fail_all(f"connection closed: {reason}")
        if not self._ready.is_set():
            self._open_error = f"connection closed while opening: {reason}"
            self._ready.set()
        connection.ioloop.stop()

    def _send(self, batch: Batch) -> None:
        """In the I/O thread: put every message of the batch in flight."""
        channel = self._channel
        if channel is None or not channel.is_open:
            batch.fail_all("channel not open")
            return
        try:
            for message in batch.messages:
                self._next_tag += 1
                with batch.lock:
                    batch.outstanding[self._next_tag] = message.message_id
                channel.basic_publish(
                    exchange="", routing_key=message.queue_name, body=message.encode(),
                    properties=pika.BasicProperties(delivery_mode=2, message_id=message.message_id,
                                                    priority=message.options.get("broker_priority")),
                    mandatory=True)
        except Exception as exc:  # the channel died while publishing
            batch.fail_all(f"{type(exc).__name__}: {exc}")

    def _shutdown(self) -> None:
        connection, thread = self._connection, self._thread
        self._connection = self._thread = None
        self._channel = None
        self._declared.clear()
        if connection is not None:
            def close() -> None:
                if connection.is_open:
                    connection.close()
                else:
                    connection.ioloop.stop()
            try:
                connection.ioloop.add_callback_threadsafe(close)
            except Exception:
                log.debug("closing the confirms connection failed", exc_info=True)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    # -- public ------------------------------------------------------------------------

    def publish(self, messages: Sequence[dramatiq.Message[Any]], timeout_s: float = 10.0) -> PublishResult:
        """Publish ``messages`` and wait up to ``timeout_s`` for their confirms."""
        if not messages:
            return PublishResult([], [])
        with self._lock:
            try:
                if self._connection is None or not self._connection.is_open or self._channel is None:
                    self._shutdown()
                    self._open()
                for queue in {message.queue_name for message in messages} - self._declared:
                    if self.declare is not None:
                        self.declare(queue)
                    self._declared.add(queue)
            except Exception as exc:
                ids = [message.message_id for message in messages]
                return PublishResult([], ids, f"{type(exc).__name__}: {exc}")
            batch = Batch(messages)
            self._batch = batch
            assert self._connection is not None
            self._connection.ioloop.add_callback_threadsafe(lambda: self._send(batch))
            settled = batch.done.wait(timeout_s)
            if not settled:  # whatever is still out counts as unconfirmed: published again later
                batch.fail_all(f"no confirm within {timeout_s:g} s")
            self._batch = None
            result = batch.result()
            if result.error is not None:
                self._shutdown()  # late confirms of this batch must not be credited to the next
            return result

    def close(self) -> None:
        with self._lock:
            self._shutdown()
