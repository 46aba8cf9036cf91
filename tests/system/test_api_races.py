"""Races between OS processes over real HTTP against a real API server
(``python -m cronhive.api``: gunicorn, 2 worker processes × 4 threads).

Eight spawned client processes connect first, meet at a barrier, then send the
same request at once: creating one ``job_id`` gives exactly one 201; creating
one name gives eight distinct ids; triggering one job gives exactly one
``lock_acquired: true``. The same served API (gunicorn's threads, its request
parsing) also answers hostile bodies with 4xx."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pymongo import MongoClient

from tests import services

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RACERS = 8
BASE = "/api/v1/cron"


class ApiServer:
    """``python -m cronhive.api`` on a free port, with the test's environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "API_HOST": "127.0.0.1", "API_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> ApiServer:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cronhive.api"], cwd=REPO, env=self.env,
                stdout=subprocess.DEVNULL, stderr=log,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer within {timeout_s} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def api_env(mongodb_uri: str, rabbitmq_url: str) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:10]
    env = {
        "MONGODB_URI": mongodb_uri, "MONGODB_DB": f"cronhive_races_{tag}", "MONGODB_TIMEOUT_MS": "3000",
        "RABBITMQ_URL": rabbitmq_url, "RUNS_QUEUE": f"cronhive.test.{tag}.runs",
        "API_WORKERS": "2", "LOG_LEVEL": "WARNING",
    }
    yield env
    client: MongoClient = MongoClient(mongodb_uri)
    client.drop_database(env["MONGODB_DB"])
    client.close()
    queue = env["RUNS_QUEUE"]
    services.delete_queues(rabbitmq_url, queue, f"{queue}.DQ", f"{queue}.XQ")


@pytest.fixture(scope="module")
def api_server(api_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(api_env, tmp_path_factory.mktemp("api") / "api.log").start()
    yield server
    server.stop()


def racer(url: str, steps: list[tuple[str, str, Any]], barrier: Any, results: Any, index: int) -> None:
    """One client process: connect, then for each step wait for the others and send it."""
    with requests.Session() as session:
        session.get(f"{url}/healthz", timeout=10)  # the keep-alive connection exists before the start line
        for step, (method, path, body) in enumerate(steps):
            barrier.wait(timeout=60)
            response = session.request(method, f"{url}{path}", json=body, timeout=30)
            results.put((step, index, response.status_code, response.json()))


#: what every racer sends, step by step
STEPS: list[tuple[str, str, Any]] = [
    ("POST", f"{BASE}/jobs", {"job_id": "raced", "name": "Raced", "schedule": "* * * * *", "handler": "noop"}),
    ("POST", f"{BASE}/api/v1/cron/jobs", {"name": "Same Name", "schedule": "@daily", "handler": "noop"}),
    ("POST", f"{BASE}/jobs/contended/trigger", None),
]


@pytest.fixture(scope="module")
def race(api_server: ApiServer) -> dict[int, list[tuple[int, dict[str, Any]]]]:
    """Run every step with 8 racing processes; the (status, body) answers per step."""
    created = requests.post(f"{api_server.url}{BASE}/jobs", timeout=10,
                            json={"job_id": "contended", "name": "Contended", "schedule": "@yearly", "handler": "sleep"})
    assert created.status_code == 201, created.text
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS)
    results = ctx.Queue()
    processes = [ctx.Process(target=racer, args=(api_server.url, STEPS, barrier, results, i)) for i in range(RACERS)]
    for process in processes:
        process.start()
    answers = [results.get(timeout=120) for _ in range(RACERS * len(STEPS))]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return {step: [(status, body) for s, _, status, body in answers if s == step] for step in range(len(STEPS))}


def test_eight_creates_of_one_job_id_one_wins(race: dict, api_server: ApiServer, api_env: dict[str, str]) -> None:
    statuses = sorted(status for status, _ in race[0])
    assert statuses == [201] + [409] * 7, race[0]
    assert all(body["error"]["code"] == "duplicate_job" for status, body in race[0] if status == 409)
    listed = requests.get(f"{api_server.url}{BASE}/jobs?limit=100", timeout=10).json()
    assert [job["job_id"] for job in listed["data"]].count("raced") == 1


def test_eight_creates_of_one_name_get_eight_ids(race: dict) -> None:
    assert [status for status, _ in race[1]] == [201] * RACERS, race[1]
    ids = {body["job_id"] for _, body in race[1]}
    assert ids == {"job_same_name"} | {f"job_same_name_{n}" for n in range(2, RACERS + 1)}


def test_eight_triggers_of_one_job_one_gets_the_lock(race: dict, api_env: dict[str, str], mongodb_uri: str,
                                                     rabbitmq_url: str) -> None:
    accepted = [body for status, body in race[2] if status == 202]
    refused = [body for status, body in race[2] if status == 409]
    assert len(accepted) == 1 and len(refused) == 7, race[2]
    (winner,) = accepted
    assert winner["lock_acquired"] is True
    assert all(body["lock_acquired"] is False and body["error"]["code"] == "lease_held" for body in refused)

    client: MongoClient = MongoClient(mongodb_uri)
    try:
        db = client[api_env["MONGODB_DB"]]
        runs = list(db.runs.find({"job_id": "contended"}))
        assert [(run["_id"], run["status"]) for run in runs] == [(winner["run_id"], "queued")]
        assert db.jobs.find_one({"_id": "contended"})["lease"]["run_id"] == winner["run_id"]
    finally:
        client.close()
    messages = [json.loads(body) for body in services.get_messages(rabbitmq_url, api_env["RUNS_QUEUE"])]
    assert [(m["actor_name"], m["args"], m["kwargs"]) for m in messages] == [
        ("execute_run", [winner["run_id"]], {"job_id": "contended"})
    ]


@pytest.mark.parametrize("data,headers,status", [
    (b"[" * 10_000 + b"]" * 10_000, {"Content-Type": "application/json"}, 400),
    (b'{"name": "\\ud800", "schedule": "* * * * *", "handler": "noop"}', {"Content-Type": "application/json"}, 400),
    (b"{" + b" " * (64 * 1024) + b"}", {"Content-Type": "application/json"}, 413),
    (iter([b'{"name": "', b"x" * (80 * 1024), b'"}']), {"Content-Type": "application/json"}, 413),  # chunked
    (b'{"name": "n"}', {"Content-Type": "text/plain"}, 415),
], ids=["10,000 nested arrays", "lone surrogate", "over 64 KiB", "over 64 KiB chunked", "not JSON"])
def test_the_served_api_answers_hostile_bodies_with_4xx(api_server: ApiServer, data: Any, headers: dict[str, str],
                                                         status: int) -> None:
    response = requests.post(f"{api_server.url}{BASE}/jobs", data=data, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert requests.get(f"{api_server.url}/healthz", timeout=10).status_code == 200
