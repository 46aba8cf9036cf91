"""Which API ``cronhive jobs`` talks to, and how long it waits for it.

``--api-url``, else ``CRONHIVE_API_URL``, else ``API_HOST``/``API_PORT`` (a
wildcard bind address connecting to the loopback), else 127.0.0.1:8080; the HTTP
timeout is ``--http-timeout`` and no prefix of it (``--timeout``) is accepted, so
it cannot be mistaken for the job's ``--timeout-s``.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from cronhive.cli.jobs import DEFAULT_API_URL, configured_api_url, parse
from tests.cli.conftest import RunningApi, run_console_script


@pytest.mark.parametrize(("env", "url"), [
    ({}, DEFAULT_API_URL),
    ({"API_PORT": "9123"}, "http://127.0.0.1:9123"),
    ({"API_HOST": "0.0.0.0", "API_PORT": "9123"}, "http://127.0.0.1:9123"),
    ({"API_HOST": "::", "API_PORT": "9123"}, "http://[::1]:9123"),
    ({"API_HOST": "::1"}, "http://[::1]:8080"),
    ({"API_HOST": "api.internal", "API_PORT": "80"}, "http://api.internal:80"),
    ({"CRONHIVE_API_URL": "https://cron.example.com", "API_PORT": "9123"}, "https://cron.example.com"),
])
def test_the_configured_api_url(env: dict[str, str], url: str) -> None:
    assert configured_api_url(env) == url


def test_api_url_flag_beats_the_environment() -> None:
    env = {"CRONHIVE_API_URL": "http://from-env:1", "API_PORT": "2"}
    assert parse(["list"], env).api_url == "http://from-env:1"
    assert parse(["--api-url", "http://flag:3", "list"], env).api_url == "http://flag:3"
    assert parse(["list", "--api-url", "http://flag:4"], env).api_url == "http://flag:4"


def test_token_before_or_after_the_command() -> None:
    assert parse(["--token", "a", "get", "x"], {}).token == "a"
    assert parse(["get", "x", "--token", "b"], {}).token == "b"
    assert parse(["--token", "a", "get", "x", "--token", "b"], {}).token == "b"


@pytest.mark.parametrize("port", ["http", "0", "70000"])
def test_a_bad_api_port_is_a_usage_error(cli, monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("API_PORT", port)

    result = cli("list")

    assert result.code == 2
    assert "API_PORT must be a port number" in result.err


def test_api_port_of_the_environment_reaches_that_api(cli, running_api: RunningApi,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    port = urlsplit(running_api.url).port
    assert port is not None and port != 8080
    monkeypatch.setenv("API_HOST", "0.0.0.0")  # what a container binds: the CLI connects to 127.0.0.1
    monkeypatch.setenv("API_PORT", str(port))
    monkeypatch.setenv("API_TOKEN", running_api.token)
    job_id = f"url-{uuid.uuid4().hex[:10]}"

    created = cli("create", "--job-id", job_id, "--name", "by API_PORT", "--schedule", "@daily", "--handler", "noop")
    listed = cli("get", job_id)

    assert created.code == 0, created.err
    assert listed.code == 0, listed.err
    assert listed.json()["job_id"] == job_id


def test_console_script_follows_api_port(running_api: RunningApi) -> None:
    port = str(urlsplit(running_api.url).port)

    result = run_console_script("jobs", "list", "--limit", "1", env={"API_PORT": port})

    assert result.code == 0, result.err
    assert "page 1 of" in result.out


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


def test_http_timeout_bounds_the_wait(cli, silent_server: str) -> None:
    began = time.monotonic()

    result = cli("list", "--api-url", silent_server, "--http-timeout", "0.5")

    assert result.code == 2
    assert "no answer within 0.5 s" in result.err
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("argv", [
    ["list", "--timeout", "5"],
    ["--timeout", "5", "list"],
    # on create and update a prefix would otherwise silently mean the job's --timeout-s
    ["create", "--name", "n", "--schedule", "@daily", "--handler", "noop", "--timeout", "5"],
    ["update", "some-job", "--timeout", "5"],
    ["list", "--http-timeout", "0"],
])
def test_the_old_timeout_flag_and_prefixes_are_refused(cli, argv: list[str]) -> None:
    result = cli("--api-url", "http://127.0.0.1:9", *argv)

    assert result.code == 2
    assert "cannot reach" not in result.err  # refused before any call


def test_timeout_s_is_still_the_jobs_time_limit() -> None:
    args = parse(["create", "--name", "n", "--schedule", "@daily", "--handler", "noop", "--timeout-s", "90",
                  "--http-timeout", "3"], {})
    assert args.timeout_s == 90
    assert args.http_timeout == 3.0
