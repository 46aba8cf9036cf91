"""The ``http`` handler's calls and the destination guard, against real HTTP
servers this test starts on 127.0.0.1 (and 127.0.0.2, which the guard refuses)."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cronhive.errors import ConfigurationError
from cronhive.http_calls import (
    DestinationGuard,
    DestinationNotAllowed,
    MissingSecret,
    UnexpectedStatus,
    parse_http_args,
    pick_address,
    run_http,
    validate_http_args,
)

LOCAL = DestinationGuard.parse("127.0.0.1")


@dataclass
class Recorder:
    requests: list[dict[str, Any]] = field(default_factory=list)
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)


def make_handler(recorder: Recorder) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorder.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body})
            status, headers, payload = recorder.routes.get(self.path.split("?")[0], (200, {}, b'{"ok": true}'))
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

    return Handler


@dataclass
class Server:
    host: str
    port: int
    recorder: Recorder
    scheme: str = "http"

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"


def serve(host: str, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    recorder = Recorder()
    httpd = http.server.ThreadingHTTPServer((host, 0), make_handler(recorder))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(host, httpd.server_address[1], recorder, "https" if tls else "http")
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    yield from serve("127.0.0.1")


@pytest.fixture
def other_server() -> Iterator[Server]:
    yield from serve("127.0.0.2")


def test_a_post_sends_json_and_headers_and_records_the_output(server: Server) -> None:
    server.recorder.routes["/hook"] = (201, {"ETag": '"v1"', "X-Internal": "no"}, b'{"created": 1}')
    args = {"url": server.url("/hook?x=1"), "headers": {"Authorization": "Bearer ${secret:HOOK_TOKEN}"},
            "body": {"job": "report", "n": [1, 2]}}
    output = run_http(args, LOCAL, env={"CRONHIVE_SECRET_HOOK_TOKEN": "s3cr3t"})
    (request,) = server.recorder.requests
    assert request["method"] == "POST" and request["path"] == "/hook?x=1"
    assert request["headers"]["Authorization"] == "Bearer s3cr3t"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Host"] == f"127.0.0.1:{server.port}"
    assert json.loads(request["body"]) == {"job": "report", "n": [1, 2]}
    assert output["status"] == 201 and output["body"] == '{"created": 1}'
    assert output["headers"]["etag"] == '"v1"' and "x-internal" not in output["headers"]


def test_an_unexpected_status_fails_with_the_output(server: Server) -> None:
    server.recorder.routes["/hook"] = (500, {}, b"boom")
    with pytest.raises(UnexpectedStatus) as caught:
        run_http({"url": server.url(), "method": "GET"}, LOCAL)
    assert caught.value.error_type == "unexpected_status"
    assert caught.value.output is not None and caught.value.output["status"] == 500
    assert caught.value.output["body"] == "boom"
    server.recorder.routes["/hook"] = (404, {}, b"")
    assert run_http({"url": server.url(), "method": "GET", "expect_status": [200, 404]}, LOCAL)["status"] == 404


def test_the_body_is_cut_at_64_kib(server: Server) -> None:
    server.recorder.routes["/big"] = (200, {"Content-Type": "text/plain"}, b"x" * 200_000)
    output = run_http({"url": server.url("/big"), "method": "GET"}, LOCAL)
    assert len(output["body"]) == 64 * 1024 and output["body_truncated"] is True


def test_a_missing_secret_fails_before_anything_is_sent(server: Server) -> None:
    with pytest.raises(MissingSecret):
        run_http({"url": server.url(), "headers": {"X-Key": "${secret:NOPE}"}}, LOCAL, env={})
    assert server.recorder.requests == []


def test_127_0_0_2_is_refused_when_only_127_0_0_1_is_allowed(other_server: Server) -> None:
    with pytest.raises(DestinationNotAllowed):
        run_http({"url": other_server.url()}, LOCAL)
    assert other_server.recorder.requests == []
    assert validate_http_args({"url": other_server.url()}, LOCAL) == {
        "url": ["Calls to 127.0.0.2 are not allowed (HTTP_HANDLER_ALLOWED_HOSTS)."]}
    assert validate_http_args({"url": "http://127.0.0.1:9/x"}, LOCAL) == {}


def test_with_no_list_loopback_and_private_are_refused_and_public_allowed(server: Server) -> None:
    guard = DestinationGuard.parse("")
    for url in ("http://127.0.0.1/", "http://10.1.2.3/", "http://192.168.0.1/", "http://169.254.169.254/",
                "http://[::1]/", "http://[fd00::1]/", "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/",
                "http://0.0.0.0/"):
        assert validate_http_args({"url": url}, guard)["url"], url
    assert validate_http_args({"url": "http://93.184.215.14/"}, guard) == {}
    with pytest.raises(DestinationNotAllowed):  # a name that resolves to a refused address
        run_http({"url": server.url(host="localhost")}, guard)
    assert server.recorder.requests == []


def test_the_checked_address_is_the_one_connected_to(server: Server) -> None:
    """The name is resolved once; the request goes to the address that passed the check."""
    answers = iter([["10.0.0.5", "127.0.0.1"]])
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return next(answers)

    output = run_http({"url": server.url(host="hooks.example.test"), "method": "GET"}, LOCAL, resolver=resolver)
    assert output["status"] == 200 and resolved == ["hooks.example.test"]
    assert server.recorder.requests[0]["headers"]["Host"] == f"hooks.example.test:{server.port}"
    assert pick_address(DestinationGuard.parse("hooks.example.test"), "hooks.example.test", 80,
                        lambda h, p: ["10.0.0.5"]).compressed == "10.0.0.5"  # a listed name: its addresses


def test_redirects_are_followed_only_to_allowed_targets(server: Server, other_server: Server) -> None:
    server.recorder.routes["/moved"] = (302, {"Location": "/final"}, b"")
    server.recorder.routes["/final"] = (200, {}, b"here")
    output = run_http({"url": server.url("/moved"), "method": "GET"}, LOCAL)
    assert output["body"] == "here" and [r["path"] for r in server.recorder.requests] == ["/moved", "/final"]
    server.recorder.routes["/away"] = (307, {"Location": other_server.url("/steal")}, b"")
    with pytest.raises(DestinationNotAllowed):
        run_http({"url": server.url("/away"), "method": "GET"}, LOCAL)
    assert other_server.recorder.requests == []


def test_https_connects_to_the_checked_address_and_verifies_the_name(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=hooks.example.test",
                    "-addext", "subjectAltName=DNS:hooks.example.test"], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for secure in serve("127.0.0.1", tls):
        url = secure.url(host="hooks.example.test")
        output = run_http({"url": url, "method": "GET"}, LOCAL, resolver=lambda h, p: ["127.0.0.1"],
                          ca_certs=str(cert))
        assert output["status"] == 200
        from cronhive.http_calls import TransportFailed

        with pytest.raises(TransportFailed):  # the certificate does not name 127.0.0.1
            run_http({"url": secure.url(), "method": "GET"}, LOCAL, ca_certs=str(cert))


@pytest.mark.parametrize(("args", "field_name"), [
    ({}, "url"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "http://user:pw@example.com/"}, "url"),
    ({"url": "http://example.com/", "method": "BREW"}, "method"),
    ({"url": "http://example.com/", "headers": {"X": 1}}, "headers"),
    ({"url": "http://example.com/", "headers": {"Bad Name": "v"}}, "headers"),
    ({"url": "http://example.com/", "headers": {"X": "a\r\nInjected: 1"}}, "headers"),
    ({"url": "http://example.com/", "expect_status": 99}, "expect_status"),
    ({"url": "http://example.com/", "expect_status": []}, "expect_status"),
    ({"url": "http://example.com/", "expect_status": [200, True]}, "expect_status"),
    ({"url": "http://example.com/", "timeout_s": 0}, "timeout_s"),
    ({"url": "http://example.com/", "timeout_s": "5"}, "timeout_s"),
    ({"url": "http://example.com/", "extra": 1}, "extra"),
])
def test_bad_arguments_are_named(args: dict[str, Any], field_name: str) -> None:
    parsed, problems = parse_http_args(args)
    assert parsed is None and field_name in problems


def test_the_allow_list_setting_is_parsed_strictly() -> None:
    guard = DestinationGuard.parse(" 127.0.0.1, 10.0.0.0/8 ,Hooks.Example.COM, ::1 ")
    assert guard.hosts == {"hooks.example.com"} and len(guard.networks) == 3
    with pytest.raises(ConfigurationError):
        DestinationGuard.parse("not a host!")
