"""A real API process for the CLI tests: ``python -m cronhive.api`` (gunicorn) on a free
port, on the session's MongoDB and RabbitMQ, with its own database, runs queue
and bearer token; plus helpers to run ``cronhive jobs`` and to ask the API directly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from cronhive.cli.jobs import main as jobs_main
from tests import services

REPO = Path(__file__).resolve().parents[2]
CRONHIVE = Path(sys.executable).with_name("cronhive")
STARTUP_TIMEOUT_S = 60.0
#: the variables the CLI reads to find the API: never inherited from the test's environment
CLIENT_ENV = frozenset({"API_TOKEN", "CRONHIVE_API_URL", "API_HOST", "API_PORT"})


@dataclass(frozen=True)
class RunningApi:
    url: str
    token: str
    db_name: str
    runs_queue: str
    rabbitmq_url: str

    def get(self, path: str) -> Any:
        """GET ``/api/v1/cron{path}`` straight from the API (not through the CLI)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/cron{path}", timeout=10) as response:
            return json.loads(response.read())

    def status_of(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/cron{path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not answer /healthz within {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="package")
def running_api(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    tag = uuid.uuid4().hex[:10]
    port = services.free_port()
    api = RunningApi(
        url=f"http://127.0.0.1:{port}",
        token=f"cli-token-{tag}",
        db_name=f"cronhive_cli_{tag}",
        runs_queue=f"cronhive.test.{tag}.runs",
        rabbitmq_url=rabbitmq_url,
    )
    env = {key: value for key, value in os.environ.items() if key not in {"API_TOKEN", "CRONHIVE_API_URL"}}
    env.update({
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": api.db_name,
        "MONGODB_TIMEOUT_MS": "2000",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": api.runs_queue,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_WORKERS": "1",
        "API_TOKEN": api.token,
        "LOG_LEVEL": "WARNING",
    })
    log_path = tmp_path_factory.mktemp("cli-api") / "api.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cronhive.api"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(api.url, process, log_path)
        yield api
    finally:
        stop_process(process)
        client: MongoClient = MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(api.db_name)
        finally:
            client.close()
        services.delete_queues(rabbitmq_url, api.runs_queue, f"{api.runs_queue}.DQ", f"{api.runs_queue}.XQ")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run ``cronhive jobs ARGS`` in this process (`cronhive.cli.jobs.main`), with no
    CRONHIVE_API_URL / API_TOKEN / API_HOST / API_PORT from the test's own environment."""
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = jobs_main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_console_script(*argv: str, env: dict[str, str] | None = None) -> CliResult:
    """Run the installed ``cronhive`` console script (the real entry point) as a subprocess."""
    base = {key: value for key, value in os.environ.items() if key not in CLIENT_ENV}
    completed = subprocess.run([str(CRONHIVE), *argv], env={**base, **(env or {})}, capture_output=True,
                               text=True, timeout=60, cwd=REPO)
    return CliResult(completed.returncode, completed.stdout, completed.stderr)
