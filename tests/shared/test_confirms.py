"""Pipelined publisher confirms against the real RabbitMQ: every message reported
confirmed is on the queue, as the bytes dramatiq would send; a connection closed
with confirms in flight reports the rest unconfirmed, and the next batch goes out
on a new connection."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest

from cronhive.broker import make_broker, run_message
from cronhive.confirms import PipelinedPublisher
from cronhive.settings import Settings
from tests import services

connection_named = services.connection_named
close_connection = services.close_connection


@pytest.fixture
def queue_settings(settings: Settings) -> Iterator[Settings]:
    yield settings


@pytest.fixture
def publisher(queue_settings: Settings) -> Iterator[PipelinedPublisher]:
    broker = make_broker(queue_settings)
    pub = PipelinedPublisher(queue_settings.rabbitmq_url, declare=lambda q: broker.declare_queue(q, ensure=True),
                             connection_name=f"cronhive-test-{uuid.uuid4().hex[:8]}")
    yield pub
    pub.close()
    broker.close()


def messages(settings: Settings, count: int) -> list[dramatiq.Message]:
    return [run_message(settings.runs_queue, f"run_{index:05d}", f"job_{index % 7}") for index in range(count)]


def test_a_batch_is_confirmed_and_on_the_queue_as_dramatiq_messages(queue_settings: Settings,
                                                                    publisher: PipelinedPublisher) -> None:
    batch = messages(queue_settings, 1000)
    result = publisher.publish(batch)
    assert result.error is None and result.unconfirmed == []
    assert sorted(result.confirmed) == sorted(m.message_id for m in batch)
    bodies = services.get_messages(queue_settings.rabbitmq_url, queue_settings.runs_queue)
    decoded = [dramatiq.Message.decode(body) for body in bodies]
    assert sorted(m.message_id for m in decoded) == sorted(m.message_id for m in batch)
    first = next(m for m in decoded if m.message_id == batch[0].message_id)
    assert (first.actor_name, first.args, first.kwargs) == (batch[0].actor_name, ("run_00000",), {"job_id": "job_0"})
    assert publisher.publish(messages(queue_settings, 3)).error is None  # the connection is reused


def test_a_connection_closed_with_confirms_in_flight_loses_nothing_confirmed(
        queue_settings: Settings, publisher: PipelinedPublisher) -> None:
    assert publisher.publish(messages(queue_settings, 1)).error is None  # connected
    services.get_messages(queue_settings.rabbitmq_url, queue_settings.runs_queue)
    rabbit_name = connection_named(publisher.connection_name)
    batch = messages(queue_settings, 20_000)
    closer = threading.Thread(target=lambda: (time.sleep(0.02), close_connection(rabbit_name)))
    closer.start()
    result = publisher.publish(batch, timeout_s=30)
    closer.join()
    assert result.error is not None, "the connection was closed mid-batch"
    assert len(result.confirmed) + len(result.unconfirmed) == len(batch)
    assert set(result.confirmed).isdisjoint(result.unconfirmed)
    on_queue = {dramatiq.Message.decode(body).message_id
                for body in services.get_messages(queue_settings.rabbitmq_url, queue_settings.runs_queue)}
    assert set(result.confirmed) <= on_queue  # confirmed means on the queue
    retry = publisher.publish([m for m in batch if m.message_id in set(result.unconfirmed)][:500])
    assert retry.error is None and len(retry.confirmed) == min(500, len(result.unconfirmed))


def test_rabbitmq_unreachable_reports_everything_unconfirmed(queue_settings: Settings) -> None:
    dead = PipelinedPublisher(f"amqp://guest:guest@127.0.0.1:{services.free_port()}/%2F", connect_timeout_s=2)
    try:
        result = dead.publish(messages(queue_settings, 5), timeout_s=2)
    finally:
        dead.close()
    assert result.confirmed == [] and len(result.unconfirmed) == 5 and result.error
