"""Outbound HTTP for the built-in ``http`` handler (and failure notifications),
behind a destination guard against server-side request forgery.

Arguments (a job's ``args`` for handler ``http``)
    ``url`` (http or https), ``method`` (default ``POST``), ``headers`` (string
    map; a value ``${secret:NAME}`` is replaced on the worker by the environment
    variable ``CRONHIVE_SECRET_NAME``, so credentials are never stored), ``body``
    (any JSON, sent as JSON), ``expect_status`` (an integer or a list of them;
    default any 2xx), ``timeout_s`` (default 30). `parse_http_args` validates them
    (the API answers 422 with its messages).

The destination guard (`DestinationGuard`, setting ``HTTP_HANDLER_ALLOWED_HOSTS``)
    A comma-separated list of host names, IP addresses and CIDR blocks. With the
    list empty every *public* address may be called; loopback, link-local,
    private, unique-local (and unspecified, multicast, reserved) addresses are
    refused unless listed. With the list set, only what it lists may be called.
    The check runs at create/update for literal IP hosts, and on every call
    after the name is resolved: the request then connects to the very address
    that was checked (no second lookup, so a DNS answer that changes between
    check and connect — DNS rebinding — cannot redirect it), sending the name as
    ``Host`` and as the TLS server name, whose certificate is verified against
    it. Redirects are followed (up to `MAX_REDIRECTS`) only when the target
    passes the same check; a refused destination sends nothing.

urllib3 does the HTTP: it lets a request connect to a chosen address while
naming the host for TLS (``server_hostname``/``assert_hostname``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3

from cronhive.enums import ErrorType
from cronhive.errors import ConfigurationError

#: Methods the handler may use.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_METHOD = "POST"
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 3600.0
#: Response body kept in the run's output.
MAX_BODY_BYTES = 64 * 1024
MAX_REDIRECTS = 5
MAX_HEADERS = 50
#: Response headers copied into the run's output.
KEPT_RESPONSE_HEADERS = ("content-type", "content-length", "location", "date", "etag", "retry-after")
SECRET_RE = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_ENV_PREFIX = "CRONHIVE_SECRET_"
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
USER_AGENT = "cronhive-http/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class CallError(Exception):
    """A call that failed in a way the run records with ``error_type``; ``output``
    (when a response came) is kept on the run too."""

    error_type: str = ErrorType.HTTP_ERROR

    def __init__(self, message: str, output: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.output = output


class DestinationNotAllowed(CallError):
    error_type = ErrorType.DESTINATION_NOT_ALLOWED


class UnexpectedStatus(CallError):
    error_type = ErrorType.UNEXPECTED_STATUS


class MissingSecret(CallError):
    error_type = ErrorType.MISSING_SECRET


class TransportFailed(CallError):
    error_type = ErrorType.HTTP_TRANSPORT_ERROR


# -- arguments --------------------------------------------------------------------


@dataclass(frozen=True)
class HttpArgs:
    """Validated arguments of one call."""

    url: str
    method: str = DEFAULT_METHOD
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    has_body: bool = False
    expect_status: tuple[int, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S

    def expects(self, status: int) -> bool:
        return status in self.expect_status if self.expect_status else 200 <= status < 300


def _status_list(value: Any) -> tuple[tuple[int, ...], list[str]]:
    values = value if isinstance(value, list) else [value]
    if not values:
        return (), ["Give at least one status code."]
    codes: list[int] = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
            return (), [f"Status codes are integers from 100 to 599, got {item!r}."]
        codes.append(item)
    return tuple(codes), []


def _url_problems(url: Any) -> list[str]:
    if not isinstance(url, str) or not url:
        return ["Give the URL to call (http or https)."]
    if len(url) > 2048:
        return ["The URL is longer than 2048 characters."]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return [f"Not a valid URL: {exc}."]
    if parts.scheme not in ("http", "https"):
        return ["Only http and https URLs can be called."]
    if not parts.hostname:
        return ["The URL has no host."]
    if parts.username or parts.password:
        return ["Put credentials in a header (with ${secret:NAME}), not in the URL."]
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        return ["The URL contains spaces or control characters."]
    return []


def _header_problems(headers: Any) -> list[str]:
    if not isinstance(headers, dict):
        return ["Headers are an object of strings."]
    if len(headers) > MAX_HEADERS:
        return [f"At most {MAX_HEADERS} headers."]
    for name, value in headers.items():
        if not _HEADER_NAME_RE.fullmatch(name):
            return [f"Not a valid header name: {name!r}."]
        if not isinstance(value, str):
            return [f"Header {name} must be a string."]
        if any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in value):
            return [f"Header {name} contains control characters."]
    return []


def parse_http_args(args: Mapping[str, Any]) -> tuple[HttpArgs | None, dict[str, list[str]]]:
    """The arguments as `HttpArgs`, or None and the problems by field."""
    known = {"url", "method", "headers", "body", "expect_status", "timeout_s"}
    problems: dict[str, list[str]] = {name: ["Unknown field."] for name in args if name not in known}
    if url_problems := _url_problems(args.get("url")):
        problems["url"] = url_problems
    method = args.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or method.upper() not in METHODS:
        problems["method"] = [f"One of {', '.join(METHODS)}."]
    headers = args.get("headers", {})
    if header_problems := _header_problems(headers):
        problems["headers"] = header_problems
    expect: tuple[int, ...] = ()
    if "expect_status" in args:
        expect, status_problems = _status_list(args["expect_status"])
        if status_problems:
            problems["expect_status"] = status_problems
    timeout = args.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
        problems["timeout_s"] = [f"A number of seconds above 0 and at most {MAX_TIMEOUT_S:g}."]
    if problems:
        return None, problems
    return HttpArgs(url=args["url"], method=str(method).upper(), headers=dict(headers), body=args.get("body"),
                    has_body="body" in args, expect_status=expect, timeout_s=float(timeout)), {}


# -- the destination guard ----------------------------------------------------------


def _always_refused(address: IPAddress) -> bool:
    """Addresses never called unless listed: not public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _always_refused(address.ipv4_mapped)
    return (address.is_loopback or address.is_link_local or address.is_private or address.is_unspecified
            or address.is_multicast or address.is_reserved or not address.is_global)


@dataclass(frozen=True)
class DestinationGuard:
    """Which addresses outbound calls may connect to (see the module docstring)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> DestinationGuard:
        """From ``HTTP_HANDLER_ALLOWED_HOSTS`` (`ConfigurationError` on a bad entry)."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in (text or "").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?", entry):
                raise ConfigurationError(f"HTTP_HANDLER_ALLOWED_HOSTS: {raw.strip()!r} is not a host name, IP or CIDR")
            hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    @property
    def restricted(self) -> bool:
        """Whether only listed destinations may be called."""
        return bool(self.hosts or self.networks)

    def allows(self, host: str, address: IPAddress) -> bool:
        """May a call to ``host`` connect to ``address``?"""
        name = host.lower().rstrip(".").strip("[]")
        if name in self.hosts:
            return True
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped else address
        if any(plain in network for network in self.networks if network.version == plain.version):
            return True
        return not self.restricted and not _always_refused(plain)

    def check_literal(self, url: str) -> str | None:
        """At create/update: why a URL whose host is an IP literal is refused (None: fine,
        or a name, which is checked when called)."""
        host = urlsplit(url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None  # a name: its addresses are checked when it is called
        if self.allows(host, address):
            return None
        return f"calls to {address} are not allowed (HTTP_HANDLER_ALLOWED_HOSTS)"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransportFailed(f"cannot resolve {host}: {exc.strerror or exc}") from None
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def pick_address(guard: DestinationGuard, host: str, port: int, resolver: Resolver) -> IPAddress:
    """The first resolved address of ``host`` the guard allows; `DestinationNotAllowed`
    when none is (nothing has been sent)."""
    try:
        candidates: list[str] = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        candidates = resolver(host, port)
    refused: list[str] = []
    for text in candidates:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if guard.allows(host, address):
            return address
        refused.append(str(address))
    raise DestinationNotAllowed(f"{host} resolves to {', '.join(refused) or 'no address'}, which is not allowed "
                                "(HTTP_HANDLER_ALLOWED_HOSTS)")


# -- secrets and the call -------------------------------------------------------------


def resolve_secrets(headers: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Header values with ``${secret:NAME}`` replaced from ``CRONHIVE_SECRET_NAME``."""

    def lookup(match: re.Match[str]) -> str:
        name = SECRET_ENV_PREFIX + match.group(1)
        if name not in env:
            raise MissingSecret(f"secret {match.group(1)} is not set on this worker (environment variable {name})")
        return env[name]

    return {key: SECRET_RE.sub(lookup, value) for key, value in headers.items()}


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool

    def output(self) -> dict[str, Any]:
        """What the run records: status, a few headers, the body's first 64 KiB as text."""
        kept = {name: value for name, value in self.headers.items() if name in KEPT_RESPONSE_HEADERS}
        text = self.body.decode("utf-8", errors="replace")
        result: dict[str, Any] = {"status": self.status, "headers": kept, "body": text}
        if self.truncated:
            result["body_truncated"] = True
        return result


def _request_once(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout_s: float,
                  guard: DestinationGuard, resolver: Resolver, ca_certs: str | None) -> Response:
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    address = pick_address(guard, host, port, resolver)
    timeout = urllib3.Timeout(total=timeout_s)
    retries = urllib3.Retry(total=False, redirect=False)
    pool: urllib3.HTTPConnectionPool
    if https:
        pool = urllib3.HTTPSConnectionPool(str(address), port, timeout=timeout, retries=retries, maxsize=1,
                                           server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED",
                                           ca_certs=ca_certs)
    else:
        pool = urllib3.HTTPConnectionPool(str(address), port, timeout=timeout, retries=retries, maxsize=1)
    default_port = 443 if https else 80
    host_header = host if ":" not in host else f"[{host}]"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    sent = {"Host": host_header if port == default_port else f"{host_header}:{port}", "User-Agent": USER_AGENT,
            **headers}
    try:
        raw = pool.urlopen(method, path, body=body, headers=sent, redirect=False, preload_content=False,
                           assert_same_host=False)
        try:
            data = raw.read(MAX_BODY_BYTES + 1, decode_content=True) if method != "HEAD" else b""
        finally:
            raw.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise TransportFailed(f"{method} {parts.scheme}://{host_header}:{port}{parts.path or '/'} failed: "
                              f"{type(exc).__name__}: {exc}"[:500]) from None
    finally:
        pool.close()
    truncated = len(data) > MAX_BODY_BYTES
    return Response(raw.status, {k.lower(): v for k, v in raw.headers.items()}, data[:MAX_BODY_BYTES], truncated)


def call(args: HttpArgs, guard: DestinationGuard, *, env: Mapping[str, str] | None = None,
         resolver: Resolver = system_resolver, ca_certs: str | None = None) -> Response:
    """Make the call (following redirects that pass the guard); the final response.
    ``ca_certs``: a CA bundle file instead of the system's trust store."""
    headers = resolve_secrets(args.headers, os.environ if env is None else env)
    body: bytes | None = None
    if args.has_body:
        body = json.dumps(args.body, separators=(",", ":")).encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    method, url = args.method, args.url
    for _ in range(MAX_REDIRECTS + 1):
        response = _request_once(method, url, headers, body, args.timeout_s, guard, resolver, ca_certs)
        location = response.headers.get("location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        url = urljoin(url, location)
        if urlsplit(url).scheme not in ("http", "https"):
            raise DestinationNotAllowed(f"redirect to a non-http URL refused: {url[:200]}")
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", None
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    raise TransportFailed(f"more than {MAX_REDIRECTS} redirects")


def run_http(args: Mapping[str, Any], guard: DestinationGuard, *, env: Mapping[str, str] | None = None,
             resolver: Resolver = system_resolver, ca_certs: str | None = None) -> dict[str, Any]:
    """The ``http`` handler's work: call, return the output; `UnexpectedStatus`
    (carrying the output) when the status is not the expected one."""
    parsed, problems = parse_http_args(args)
    if parsed is None:
        raise CallError(f"invalid http arguments: {json.dumps(problems)[:500]}")
    response = call(parsed, guard, env=env, resolver=resolver, ca_certs=ca_certs)
    output = response.output()
    if not parsed.expects(response.status):
        expected = ", ".join(map(str, parsed.expect_status)) or "2xx"
        raise UnexpectedStatus(f"{parsed.method} {parsed.url} answered {response.status}, expected {expected}",
                               output)
    return output


def post_json(url: str, body: bytes, headers: Mapping[str, str], guard: DestinationGuard, timeout_s: float, *,
              env: Mapping[str, str] | None = None, resolver: Resolver = system_resolver,
              ca_certs: str | None = None) -> Response:
    """One ``POST`` of the JSON ``body`` exactly as given (so a signature over those bytes
    holds) to ``url`` under the guard, redirects not followed (failure notifications).
    Header values may use ``${secret:NAME}``."""
    sent = resolve_secrets(headers, os.environ if env is None else env)
    if not any(name.lower() == "content-type" for name in sent):
        sent["Content-Type"] = "application/json"
    return _request_once("POST", url, sent, body, timeout_s, guard, resolver, ca_certs)


#: The checks of a URL and of a header map, for other fields that name a destination (``notify``).
url_problems = _url_problems
header_problems = _header_problems


def validate_http_args(args: Mapping[str, Any], guard: DestinationGuard) -> dict[str, list[str]]:
    """Problems with a job's ``http`` arguments, by field, for the API's 422 (empty: fine)."""
    parsed, problems = parse_http_args(args)
    if parsed is not None and (why := guard.check_literal(parsed.url)):
        problems["url"] = [why[0].upper() + why[1:] + "."]
    return problems


__all__: Sequence[str] = [
    "CallError",
    "DestinationGuard",
    "DestinationNotAllowed",
    "HttpArgs",
    "MissingSecret",
    "UnexpectedStatus",
    "call",
    "header_problems",
    "parse_http_args",
    "pick_address",
    "post_json",
    "resolve_secrets",
    "run_http",
    "url_problems",
    "validate_http_args",
]
