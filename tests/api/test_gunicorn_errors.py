"""What gunicorn refuses before the app sees a request is answered in the API's one
error shape too — against the real ``python -m cronhive.api`` (gunicorn) process,
over raw sockets, since no HTTP client sends these requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronhive.api.gunicorn_conf import limit_request_field_size, limit_request_fields, limit_request_line
from tests import services

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_port(mongodb_uri: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = services.free_port()
    tag = uuid.uuid4().hex[:10]
    env = {key: value for key, value in os.environ.items() if key != "API_TOKEN"}
    env.update({"MONGODB_URI": mongodb_uri, "MONGODB_DB": f"cronhive_gunicorn_{tag}", "RABBITMQ_URL": rabbitmq_url,
                "RUNS_QUEUE": f"cronhive.test.{tag}.runs", "API_HOST": "127.0.0.1", "API_PORT": str(port),
                "API_WORKERS": "1", "LOG_LEVEL": "WARNING"})
    log_path = tmp_path_factory.mktemp("gunicorn") / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "cronhive.api"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        services.wait_for(healthy, 60, "the API under gunicorn")
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        services.delete_queues(rabbitmq_url, env["RUNS_QUEUE"])


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` as is; the status, headers and body of the answer (read until close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            answer = b"".join(chunks)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def assert_one_error_shape(headers: dict[str, str], body: bytes, code: str) -> dict[str, object]:
    assert headers["content-type"] == "application/json"
    assert b"<html" not in body.lower()
    document = json.loads(body)
    assert set(document) == {"error"}
    assert set(document["error"]) == {"code", "message", "details"}
    assert document["error"]["code"] == code
    assert document["error"]["details"] == {}
    text = body.decode().lower()
    assert "gunicorn" not in text and "traceback" not in text
    return dict(document["error"])


def test_an_over_long_url_is_a_json_414(api_port: int) -> None:
    path = "/api/v1/cron/jobs?name=" + "x" * (limit_request_line + 10)

    status, headers, body = exchange(api_port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    assert status == 414
    error = assert_one_error_shape(headers, body, "uri_too_long")
    assert str(limit_request_line) in str(error["message"])
    assert "xxxx" not in body.decode()  # the input is not echoed


def test_a_url_just_under_the_limit_reaches_the_app(api_port: int) -> None:
    filler = "x" * (limit_request_line - 200)
    status, _, body = exchange(api_port, f"GET /api/v1/cron/nowhere?{filler} HTTP/1.1\r\nHost: x\r\n"
                                               "Connection: close\r\n\r\n".encode())
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"


def test_too_many_headers_is_a_json_431(api_port: int) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(limit_request_fields + 5))

    status, headers, body = exchange(api_port, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())

    assert status == 431
    assert_one_error_shape(headers, body, "request_header_fields_too_large")


def test_a_too_large_header_is_a_json_431(api_port: int) -> None:
    big = "v" * (limit_request_field_size + 100)

    status, headers, body = exchange(api_port, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode())

    assert status == 431
    assert_one_error_shape(headers, body, "request_header_fields_too_large")


@pytest.mark.parametrize("raw", [
    b"NONSENSE\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    b"G\x00T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
    b"POST /api/v1/cron/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
], ids=["no-request-line", "http-9.9", "nul-in-method", "space-in-header-name", "two-content-lengths"])
def test_malformed_requests_are_a_json_400(api_port: int, raw: bytes) -> None:
    status, headers, body = exchange(api_port, raw)

    assert status == 400
    assert_one_error_shape(headers, body, "bad_request")


def test_an_unsupported_transfer_coding_is_a_json_501(api_port: int) -> None:
    raw = (b"POST /api/v1/cron/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n")

    status, headers, body = exchange(api_port, raw)

    assert status == 501
    assert_one_error_shape(headers, body, "not_implemented")


def test_the_worker_keeps_serving_after_refusals(api_port: int) -> None:
    for _ in range(3):
        exchange(api_port, b"NONSENSE\r\n\r\n")
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v1/cron/jobs", timeout=10) as response:
        assert response.status == 200
        assert "data" in json.loads(response.read())
