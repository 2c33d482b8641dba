"""Sending one webhook request: which URLs may be sent to, the POST itself, and when to try
again after a failure. Pure: no Django (settings come in as arguments).

Server-side request forgery: a webhook URL is chosen by a tenant, and the request leaves from
inside the operator's network. Unless private addresses are allowed (the development
default), a URL whose host resolves to any loopback, private, link-local (cloud metadata),
shared or reserved address is refused — when the endpoint is saved and again at every
attempt, and the request then goes to the very address that was checked, so a DNS answer
that changes in between (DNS rebinding) cannot redirect it. Redirects are never followed.
"""

import ipaddress
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import urllib3

ALLOWED_SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 10.0
TOTAL_TIMEOUT_SECONDS = 15.0
RESPONSE_EXCERPT_BYTES = 1024
MAX_ERROR_LENGTH = 300

# Retries: 30 s after the first failure, doubling (1 min, 2 min, 4 min …) up to an hour
# between tries, each ±20 % so endpoints that failed together are not retried together;
# no try later than RETRY_WINDOW after the event.
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 3600
JITTER = 0.2
RETRY_WINDOW = timedelta(days=3)


class UrlRefused(ValueError):
    """A URL webhooks may not be sent to; the message says why and what to use instead."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    # The checked addresses to connect to; empty when private addresses are allowed and the
    # host is left to the resolver at connection time.
    addresses: tuple[str, ...] = ()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.scheme == "https" else 80
        return host if self.port == default_port else f"{host}:{self.port}"


def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to (IPv4 and IPv6), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, whatever its spelling
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool,
              resolver: Callable[[str, int], list[str]] = resolve) -> Target:
    """The target of `url` if webhooks may be sent there, else UrlRefused saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UrlRefused(f"This is not a valid URL ({error}).") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UrlRefused("Use an http:// or https:// URL (https:// in production).")
    host = parts.hostname
    if not host:
        raise UrlRefused("The URL has no host name.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("Leave credentials out of the URL: check the Switchyard-Signature header instead.")
    if any(character.isspace() for character in url):
        raise UrlRefused("The URL contains spaces; percent-encode them (%20).")
    port = port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = Target(scheme=scheme, host=host, port=port, path=path)
    if allow_private:
        return target
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError):
        raise UrlRefused(f"{host} does not resolve to an address; check the host name.") from None
    if not addresses:
        raise UrlRefused(f"{host} does not resolve to an address; check the host name.")
    refused = [address for address in addresses if not is_public_address(address)]
    if refused:
        raise UrlRefused(f"{host} resolves to {refused[0]}, a private, loopback or otherwise internal address. "
                         f"Webhooks are sent to public addresses only.")
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))


@dataclass(frozen=True)
class AttemptResult:
    """What one POST came to. `status_code` is None when no HTTP answer arrived."""

    status_code: int | None
    error: str
    duration_ms: int
    response_excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool,
         resolver: Callable[[str, int], list[str]] = resolve) -> AttemptResult:
    """POST `body` to `url` once: no retries, no redirects, short timeouts. Success is any 2xx.
    Never raises for a network or HTTP problem: it is described in the result's `error`."""
    started = time.monotonic()

    def result(status_code: int | None, error: str, excerpt: str = "") -> AttemptResult:
        return AttemptResult(status_code=status_code, error=error[:MAX_ERROR_LENGTH],
                             duration_ms=round((time.monotonic() - started) * 1000), response_excerpt=excerpt)

    try:
        target = check_url(url, allow_private=allow_private, resolver=resolver)
    except UrlRefused as refused:
        return result(None, f"Not sent: {refused}")
    pool = _pool(target)
    try:
        response = pool.urlopen("POST", target.path, body=body, headers={**headers, "Host": target.host_header},
                                redirect=False, retries=False, preload_content=False, assert_same_host=False)
        try:
            excerpt = response.read(RESPONSE_EXCERPT_BYTES).decode("utf-8", errors="replace")
        except urllib3.exceptions.HTTPError:
            excerpt = ""  # the status line arrived; a body cut short does not change the outcome
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as error:
        return result(None, describe_error(error))
    finally:
        pool.close()
    status = response.status
    if 200 <= status < 300:
        return result(status, "", excerpt)
    if 300 <= status < 400:
        return result(status, f"HTTP {status}: redirects are not followed; use the final URL.", excerpt)
    return result(status, f"HTTP {status} {response.reason or ''}".strip(), excerpt)


def _pool(target: Target) -> urllib3.HTTPConnectionPool:
    # Connect to the checked address itself; TLS still verifies the certificate against the host name.
    host = target.addresses[0] if target.addresses else target.host
    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS,
                              total=TOTAL_TIMEOUT_SECONDS)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(host, target.port, timeout=timeout, retries=False, maxsize=1,
                                           cert_reqs="CERT_REQUIRED", server_hostname=target.host,
                                           assert_hostname=target.host)
    return urllib3.HTTPConnectionPool(host, target.port, timeout=timeout, retries=False, maxsize=1)


def describe_error(error: Exception) -> str:
    """A short sentence a person can act on, for the delivery log."""
    # NewConnectionError (and its NameResolutionError) subclass ConnectTimeoutError in urllib3 2: test them first.
    if isinstance(error, urllib3.exceptions.NameResolutionError):
        host = getattr(getattr(error, "conn", None), "host", "")
        return f"Could not resolve the host name {host}: check the URL, or your DNS."
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        reason = str(error).rpartition(": ")[2] or str(error)
        return f"Could not connect: {reason}"
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return f"Timed out connecting (after {CONNECT_TIMEOUT_SECONDS:g} s)."
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return f"No response within {READ_TIMEOUT_SECONDS:g} s."
    if isinstance(error, urllib3.exceptions.SSLError):
        return f"TLS failed: {error}"
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return f"The connection broke: {error}"
    return f"{type(error).__name__}: {error}"


def retry_delay_seconds(failures: int, rng: random.Random) -> float:
    """Seconds to wait after the `failures`-th failed try (1, 2, …): 30 s doubling to at most an hour, ±20 %."""
    base = FIRST_RETRY_SECONDS * 2 ** min(max(failures, 1) - 1, 16)
    return min(MAX_RETRY_SECONDS, base * rng.uniform(1 - JITTER, 1 + JITTER))


def next_attempt_at(*, failures: int, created_at: datetime, now: datetime, rng: random.Random) -> datetime | None:
    """When to try again after the `failures`-th failed try, or None: that would be past the retry
    window of the event, so give up."""
    at = now + timedelta(seconds=retry_delay_seconds(failures, rng))
    return None if at > created_at + RETRY_WINDOW else at
