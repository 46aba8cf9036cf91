"""What an operator sees in the RabbitMQ management console (its HTTP API): queues
named for what they carry, the dead-letter queue, and dead-lettered runs readable
as JSON naming the job and the run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.ops.conftest import Management, System, wait_for

pytestmark = pytest.mark.slow

#: dramatiq keeps dead-lettered messages for a week
DEAD_MESSAGE_TTL_MS = 7 * 86400 * 1000


def test_the_management_api_answers(management: Management) -> None:
    overview = management.request("GET", "/overview")
    assert overview.status_code == 200
    assert "rabbitmq_version" in overview.json()


def test_queues_are_named_for_what_they_carry(system: System) -> None:
    queue = system.queue
    prefix = queue.rsplit(".", 1)[0] + "."
    queues = {q["name"]: q for q in system.management.queues() if q["name"].startswith(prefix)}
    # the runs, their delayed retries (.DQ) and their dead letters (.XQ), and the same three of
    # the hand-on queue (.next: a run handing its job's lease on to the next waiting slot)
    assert set(queues) == {name + suffix for name in (queue, f"{queue}.next") for suffix in ("", ".DQ", ".XQ")}
    assert all(q["durable"] for q in queues.values())
    for base in (queue, f"{queue}.next"):
        for name in (base, f"{base}.DQ"):
            assert queues[name]["arguments"] == {"x-dead-letter-exchange": "",
                                                 "x-dead-letter-routing-key": f"{base}.XQ"}
        assert queues[f"{base}.XQ"]["arguments"] == {"x-message-ttl": DEAD_MESSAGE_TTL_MS}


def dead_letters(system: System, run_id: str) -> list[dict[str, Any]]:
    """The messages of ``run_id`` on the dead-letter queue, as the console shows them."""
    found = []
    for message in system.management.peek(f"{system.queue}.XQ"):
        assert message["payload_encoding"] == "string", message  # readable text, not base64
        body = json.loads(message["payload"])
        if body.get("args") == [run_id]:
            found.append({**message, "body": body})
    return found


def test_a_run_that_exhausts_its_retries_is_readable_json_on_the_dead_letter_queue(system: System) -> None:
    run_id = system.run_ids["boom"]
    run = system.wait_run(run_id)
    assert run["status"] == "failed" and run["attempt"] == 2  # max_retries=1: both attempts failed

    [message] = wait_for(lambda: dead_letters(system, run_id), 15, f"run {run_id} on the dead-letter queue",
                         interval_s=0.25)
    body = message["body"]
    assert body["actor_name"] == "execute_run"
    assert body["args"] == [run_id]
    assert body["kwargs"] == {"job_id": "boom"}
    assert body["options"] == {"cronhive_after_attempt": 1}  # the retry that followed attempt 1
    # rejected by the worker on the runs queue, dead-lettered by RabbitMQ to <queue>.XQ
    assert body["queue_name"] == system.queue
    assert message["routing_key"] == f"{system.queue}.XQ"
    headers = message["properties"]["headers"]
    assert headers["x-first-death-queue"] == system.queue and headers["x-first-death-reason"] == "rejected"
    # peeking left it there (ackmode ack_requeue_true): still visible to the next operator
    assert len(dead_letters(system, run_id)) == 1
