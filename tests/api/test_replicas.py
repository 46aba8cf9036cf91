"""Two API replicas — two real gunicorn processes (``python -m cronhive.api``) on one
database — raced by many concurrent clients: one Idempotency-Key acts once (a
create, a trigger), and of PUTs/DELETEs sent with the same If-Match exactly one wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests import services
from tests.cli.conftest import REPO, stop_process, wait_until_healthy

TOKEN = "replica-token"
CLIENTS = 16


@dataclass(frozen=True)
class Replicas:
    urls: tuple[str, str]
    db_name: str
    mongodb_uri: str


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(url: str, method: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    if data is not None:
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Answer(exc.code, dict(exc.headers.items()), exc.read())


def race(calls: list[tuple[str, str, Any, dict[str, str]]]) -> list[Answer]:
    """Send every call at once (one thread each, released together)."""
    answers: list[Answer | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def one(index: int) -> None:
        url, method, body, headers = calls[index]
        start.wait()
        answers[index] = send(url, method, body, headers)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


@pytest.fixture(scope="module")
def replicas(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tag = uuid.uuid4().hex[:10]
    db_name, queue = f"cronhive_replicas_{tag}", f"cronhive.test.{tag}.runs"
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    logs = tmp_path_factory.mktemp("replicas")
    try:
        for index in range(2):
            port = services.free_port()
            env = {key: value for key, value in os.environ.items() if key not in {"API_TOKEN", "API_TOKENS"}}
            env.update({"MONGODB_URI": mongodb_uri, "MONGODB_DB": db_name, "MONGODB_TIMEOUT_MS": "5000",
                        "RABBITMQ_URL": rabbitmq_url, "RUNS_QUEUE": queue, "API_HOST": "127.0.0.1",
                        "API_PORT": str(port), "API_WORKERS": "1", "API_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"})
            log_path = Path(logs) / f"api{index}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen([sys.executable, "-m", "cronhive.api"], cwd=REPO, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
            wait_until_healthy(urls[-1], process, log_path)
        yield Replicas((urls[0], urls[1]), db_name, mongodb_uri)
    finally:
        for process in processes:
            stop_process(process)
        client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(db_name)
        finally:
            client.close()
        services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")


@pytest.fixture
def db(replicas: Replicas) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(replicas.mongodb_uri, tz_aware=True)
    yield client[replicas.db_name]
    client.close()


def across(replicas: Replicas, path: str, method: str, body: Any, headers: dict[str, str],
           count: int = CLIENTS) -> list[tuple[str, str, Any, dict[str, str]]]:
    return [(f"{replicas.urls[index % 2]}/api/v1/cron{path}", method, body, headers) for index in range(count)]


def test_one_idempotency_key_raced_on_two_replicas_creates_one_job(replicas: Replicas, db: Any) -> None:
    name = f"Raced {uuid.uuid4().hex[:6]}"  # no job_id: a second effect would create <id>_2
    body = {"name": name, "schedule": "0 3 * * *", "handler": "noop"}
    key = {"Idempotency-Key": f"create-{uuid.uuid4().hex}"}
    answers = race(across(replicas, "/jobs", "POST", body, key))
    statuses = sorted(answer.status for answer in answers)
    assert set(statuses) <= {201, 409}, statuses
    created = [answer for answer in answers if answer.status == 201]
    originals = [answer for answer in created if "Idempotent-Replayed" not in answer.headers]
    assert len(originals) == 1, statuses
    assert all(answer.body == originals[0].body for answer in created)
    for answer in answers:
        if answer.status == 409:
            assert answer.json()["error"]["code"] == "idempotency_key_in_progress"
    assert db.jobs.count_documents({"name": name}) == 1
    later = [send(f"{url}/api/v1/cron/jobs", "POST", body, key) for url in replicas.urls]
    assert [(answer.status, answer.headers.get("Idempotent-Replayed")) for answer in later] == [(201, "true")] * 2
    assert all(answer.body == originals[0].body for answer in later)
    assert db.jobs.count_documents({"name": name}) == 1
    print(f"create race: {statuses.count(201)} × 201 (1 original), {statuses.count(409)} × 409 in progress")


def test_one_idempotency_key_raced_on_two_replicas_triggers_once(replicas: Replicas, db: Any) -> None:
    job_id = f"raced-{uuid.uuid4().hex[:8]}"
    assert send(f"{replicas.urls[0]}/api/v1/cron/jobs", "POST",
                {"job_id": job_id, "name": "raced", "schedule": "0 3 * * *", "handler": "noop",
                 "overlap_policy": "allow"}).status == 201
    key = {"Idempotency-Key": f"trigger-{uuid.uuid4().hex}"}
    answers = race(across(replicas, f"/jobs/{job_id}/trigger", "POST", None, key))
    assert {answer.status for answer in answers} <= {202, 409}
    run_ids = {answer.json()["run_id"] for answer in answers if answer.status == 202}
    assert len(run_ids) == 1
    assert db.runs.count_documents({"job_id": job_id}) == 1


def test_writers_racing_the_same_if_match_on_two_replicas_exactly_one_wins(replicas: Replicas, db: Any) -> None:
    job_id = f"etag-{uuid.uuid4().hex[:8]}"
    created = send(f"{replicas.urls[1]}/api/v1/cron/jobs", "POST",
                   {"job_id": job_id, "name": "raced", "schedule": "0 3 * * *", "handler": "noop"})
    etag = created.headers["ETag"]
    calls = [(f"{replicas.urls[index % 2]}/api/v1/cron/jobs/{job_id}", "PUT", {"name": f"writer {index}"},
              {"If-Match": etag}) for index in range(CLIENTS)]
    answers = race(calls)
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [200] + [412] * (CLIENTS - 1), statuses
    winner = next(answer for answer in answers if answer.status == 200)
    assert db.jobs.find_one({"_id": job_id})["name"] == winner.json()["name"]
    assert winner.headers["ETag"] == '"2"'
    assert [doc["revision"] for doc in db.job_revisions.find({"job_id": job_id}).sort("revision", 1)] == [1, 2]

    deletes = race([(f"{replicas.urls[index % 2]}/api/v1/cron/jobs/{job_id}", "DELETE", None, {"If-Match": '"2"'})
                    for index in range(CLIENTS)])
    deleted = [answer for answer in deletes if answer.status == 200]
    assert len(deleted) == 1 and {answer.status for answer in deletes} <= {200, 404, 409, 412}
    assert db.jobs.count_documents({"_id": job_id}) == 0
    history = list(db.job_revisions.find({"job_id": job_id}).sort("revision", 1))
    assert [(doc["revision"], doc["action"]) for doc in history] == [(1, "create"), (2, "update"), (3, "delete")]
