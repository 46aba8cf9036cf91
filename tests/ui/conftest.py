"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
stack — the API under gunicorn (two workers, so the session cookie must verify in
either), one scheduler and one worker process, on the session's MongoDB and RabbitMQ,
with their own database, runs queue and API token.

Chromium is ``/usr/bin/chromium`` (``CHROMIUM`` overrides); when it cannot start, the
tests fail — they never skip. Screenshots go to ``tests/artifacts/`` (gitignored).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from pymongo import MongoClient

from tests import services
from tests.cli.conftest import stop_process, wait_until_healthy
from tests.worker.cluster import WorkerCluster

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1440, "height": 900}


def chromium_path() -> str:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@dataclass(frozen=True)
class Stack:
    url: str
    token: str
    db_name: str
    mongodb_uri: str
    runs_queue: str

    def api(self, method: str, path: str, body: Any = None, *, token: bool = True) -> tuple[int, Any]:
        """Call ``/api/v1/cron{path}`` directly (with the bearer token unless told not to)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/cron{path}", data=data, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def create_job(self, **fields: Any) -> dict[str, Any]:
        status, body = self.api("POST", "/jobs", {"schedule": "0 3 * * *", "handler": "noop", **fields})
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    def db(self) -> Any:
        client: MongoClient = MongoClient(self.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        return client, client[self.db_name]


def _env(mongodb_uri: str, rabbitmq_url: str, db_name: str, queue: str, token: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {"API_TOKEN", "CRONHIVE_API_URL", "UI_SECRET_KEY"} and not key.startswith("MONGODB_")}
    env.update({
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": db_name,
        "MONGODB_TIMEOUT_MS": "3000",
        "RABBITMQ_URL": rabbitmq_url,
        "RUNS_QUEUE": queue,
        "API_TOKEN": token,
        "LOG_LEVEL": "WARNING",
        "METRICS_PORT": "0",
        "JOB_LEASE_S": "6",
        "LEADER_LEASE_S": "6",
    })
    return env


@pytest.fixture(scope="package")
def stack(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:10]
    port = services.free_port()
    stack = Stack(url=f"http://127.0.0.1:{port}", token=f"ui-token-{tag}", db_name=f"cronhive_ui_{tag}",
                  mongodb_uri=mongodb_uri, runs_queue=f"cronhive.test.{tag}.runs")
    env = _env(mongodb_uri, rabbitmq_url, stack.db_name, stack.runs_queue, stack.token)
    logs = tmp_path_factory.mktemp("ui-stack")
    api_env = {**env, "API_HOST": "127.0.0.1", "API_PORT": str(port), "API_WORKERS": "2"}
    started: list[subprocess.Popen[bytes]] = []
    workers = WorkerCluster(env=env, log_dir=logs, size=1)
    try:
        with open(logs / "api.log", "wb") as log:
            started.append(subprocess.Popen([sys.executable, "-m", "cronhive.api"], cwd=REPO, env=api_env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True))
        with open(logs / "scheduler.log", "wb") as log:
            started.append(subprocess.Popen([sys.executable, "-m", "cronhive.scheduler"], cwd=REPO, env=env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_until_healthy(stack.url, started[0], logs / "api.log")
        workers.start()
        yield stack
    finally:
        workers.stop()
        for process in reversed(started):
            stop_process(process)
        client: MongoClient = MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(stack.db_name)
        finally:
            client.close()
        services.delete_queues(rabbitmq_url, stack.runs_queue, f"{stack.runs_queue}.DQ", f"{stack.runs_queue}.XQ")


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium; a failure to start it fails the tests (never a skip)."""
    path = chromium_path()
    try:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
    except Exception as exc:
        pytest.fail(f"Chromium could not start from {path} (install it: apt-get install -y chromium): {exc}")
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    yield context
    context.close()


class Console:
    """What the page logged: errors and CSP violations fail the tests that check it."""

    def __init__(self, page: Page) -> None:
        self.messages: list[str] = []
        page.on("console", lambda message: self.messages.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.messages.append(f"pageerror: {error}"))

    def errors(self) -> list[str]:
        return [m for m in self.messages if m.startswith(("error", "pageerror"))]


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.console = Console(page)  # type: ignore[attr-defined]
    return page


def sign_in(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/ui/signin")
    page.fill("#f-token", stack.token)
    page.click("#signin")
    page.wait_for_selector("text=Signed in")


@pytest.fixture
def signed_in(page: Page, stack: Stack) -> Page:
    sign_in(page, stack)
    return page


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artefact (tests/artifacts/<name>.png)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
