"""Webhooks to customers: the `webhook_delivery` entrypoint and the daily `credits.expiring` sweep.

The entrypoint name is the contract with sql/46_webhooks.sql, which queues one entry per
attempt in the transaction of the change the event reports. Delivery is at least once:
the claim hands out an attempt number, the outcome is recorded against it (a resend that
overtook this attempt makes the record a no-op), and the SQL queues the next try.

The sender must never become a way into our own network: the endpoint's host is resolved
once, every address it resolves to must be public (not loopback, private, link-local —
which holds the cloud metadata address — shared, multicast or reserved), and the
connection goes to the address that was checked, so a DNS answer that changes between
the check and the connection (rebinding) cannot redirect it. Redirects are never
followed. WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1 lifts the address rule for local development
and tests only.

Signatures follow Stripe's scheme: `Story-Genius-Signature: t=<unix time>,v1=<hex
HMAC-SHA256 of "<t>.<body>" keyed by the endpoint's secret>`; `verify_signature` below is
the reference a receiver can copy.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable
from urllib.parse import urlsplit

from pgqueuer import PgQueuer
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("worker.webhooks")

SIGNATURE_HEADER = "Story-Genius-Signature"
# A receiver should refuse signatures older than this (replays), as Stripe's libraries do.
SIGNATURE_TOLERANCE_SECONDS = 300
USER_AGENT = "StoryGenius-Webhooks/1.0 (+https://storygenius.app/docs)"
# Enough to see a status line; receivers are asked to answer fast and say little.
MAX_RESPONSE_BYTES = 64 * 1024
# Daily, mid-morning UTC: tell customers whose unused credits end within three days.
CREDITS_EXPIRING_CRON = "0 9 * * *"
# Shared address space (RFC 6598) is not "private" to Python but is not the internet either.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


class RefusedTarget(Exception):
    """The endpoint's URL or address may not be called; the message is for the customer."""


@dataclass(frozen=True)
class WebhookSettings:
    allow_private_addresses: bool = False
    # the first retry waits this long; each later one three times the one before
    retry_base: timedelta = timedelta(minutes=1)
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> "WebhookSettings":
        return cls(allow_private_addresses=allow_private_addresses(os.environ),
                   retry_base=timedelta(seconds=float(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS", "60"))),
                   timeout_seconds=float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "10")))


def allow_private_addresses(environ) -> bool:
    """WEBHOOK_ALLOW_PRIVATE_ADDRESSES: 1 for local development and tests only."""
    value = (environ.get("WEBHOOK_ALLOW_PRIVATE_ADDRESSES") or "0").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", ""):
        raise ValueError("WEBHOOK_ALLOW_PRIVATE_ADDRESSES must be 0 or 1")
    return value in ("1", "true", "yes")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
                     now: float | None = None) -> bool:
    """What a receiver does: recompute the HMAC over `t.body` with its secret, compare in
    constant time against every v1 in the header, and refuse a timestamp too far away."""
    try:
        parts = [item.split("=", 1) for item in header.split(",")]
        timestamp = int(next(value for key, value in parts if key == "t"))
        candidates = [value for key, value in parts if key == "v1"]
    except (ValueError, StopIteration):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast address (IPv4-mapped IPv6 is judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return False
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str


def check_url(url: str, *, allow_http: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an endpoint URL, or RefusedTarget saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RefusedTarget("The URL is not valid.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RefusedTarget("The URL must start with https:// and name a host.")
    if parts.scheme == "http" and not allow_http:
        raise RefusedTarget("The URL must use https.")
    if parts.username or parts.password:
        raise RefusedTarget("The URL must not contain a user name or password.")
    if parts.fragment:
        raise RefusedTarget("The URL must not contain a #fragment.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def resolve_target(url: str, *, allow_private: bool, allow_http: bool, resolver: Resolver | None = None) -> Target:
    """Checks the URL, resolves its host once and checks every address; the Target names the
    one address to connect to. RefusedTarget when the URL, the name or an address is refused."""
    scheme, host, port, path = check_url(url, allow_http=allow_http)
    try:
        addresses = (resolver or resolve)(host, port)
    except (OSError, UnicodeError):
        raise RefusedTarget(f"The host {host} could not be resolved.") from None
    if not addresses:
        raise RefusedTarget(f"The host {host} could not be resolved.")
    if not allow_private:
        # every answer must be public: otherwise a name could mix in an internal address
        refused = [a for a in addresses if not is_public_address(a)]
        if refused:
            raise RefusedTarget(f"The host {host} resolves to a non-public address ({refused[0]}); "
                                "webhooks are only sent to public internet addresses.")
    return Target(scheme, host, port, path, addresses[0])


# the connect step, replaceable in tests to see which address a delivery connects to
open_socket = socket.create_connection


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to the checked address, with the URL's host in the Host header."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self):
        self.sock = open_socket((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked address; the certificate is verified for the URL's host (SNI too)."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext):
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._tls = context

    def connect(self):
        sock = open_socket((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _cut(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """End a connection that ran out of time: its blocked read returns at once."""
    cut.set()
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: bytes, headers: dict[str, str], settings: WebhookSettings, *,
         resolver: Resolver | None = None, tls: ssl.SSLContext | None = None) -> Outcome:
    """One POST of `body` to `url` under the address rules above. Never raises for the
    receiver's faults: they come back as an Outcome whose error the customer may read."""
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        target = resolve_target(url, allow_private=settings.allow_private_addresses,
                                allow_http=settings.allow_private_addresses, resolver=resolver)
    except RefusedTarget as refused:
        return Outcome(None, elapsed(), f"Not sent: {refused}")
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(target, settings.timeout_seconds, tls or ssl.create_default_context())
    else:
        connection = _PinnedHTTPConnection(target, settings.timeout_seconds)
    # the socket timeout bounds each read; this bounds the whole exchange, so a receiver
    # that trickles a byte at a time cannot hold a worker slot
    cut = threading.Event()
    deadline = threading.Timer(settings.timeout_seconds, _cut, args=(connection, cut))
    deadline.start()
    too_slow = f"No complete answer within {settings.timeout_seconds:g} s."
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        status = response.status
    except (TimeoutError, socket.timeout):
        return Outcome(None, elapsed(), too_slow)
    except ssl.SSLError as error:
        return Outcome(None, elapsed(), too_slow if cut.is_set() else f"TLS failed: {error.reason or 'handshake error'}.")
    except OSError as error:
        return Outcome(None, elapsed(), too_slow if cut.is_set()
                       else f"Could not connect: {error.strerror or type(error).__name__}.")
    except http.client.HTTPException as error:
        return Outcome(None, elapsed(), too_slow if cut.is_set() else f"Invalid HTTP answer ({type(error).__name__}).")
    finally:
        deadline.cancel()
        connection.close()
    if 300 <= status < 400:
        return Outcome(status, elapsed(), f"HTTP {status}: redirects are not followed; use the final URL.")
    return Outcome(status, elapsed(), None if 200 <= status < 300 else f"HTTP {status}")


def delivery_headers(secret: str, body: bytes, event_id: str, event_type: str, now: float | None = None) -> dict:
    timestamp = int(time.time() if now is None else now)
    return {"Content-Type": "application/json", "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            "Story-Genius-Event-Id": event_id, "Story-Genius-Event-Type": event_type}


async def deliver_once(pool: AsyncConnectionPool, delivery_id: str, settings: WebhookSettings) -> str:
    """Claims, sends and records one attempt of a delivery; returns what the SQL decided
    ('succeeded', 'retrying', 'failed', 'disabled', 'superseded') or 'nothing to do'."""
    async with pool.connection() as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(
            "select * from app.claim_webhook_delivery(%s)", (delivery_id,))
        claim = await cur.fetchone()
    if claim is None:
        return "nothing to do"
    body = claim["body"].encode()
    headers = delivery_headers(claim["secret"], body, claim["event_id"], claim["event_type"])
    outcome = await asyncio.to_thread(post, claim["url"], body, headers, settings)
    async with pool.connection() as conn:
        cur = await conn.execute("select app.record_webhook_attempt(%s, %s, %s, %s, %s, %s)",
                                 (delivery_id, claim["attempt"], outcome.status_code, outcome.latency_ms,
                                  outcome.error, settings.retry_base))
        decided = (await cur.fetchone())[0]
    log.info("webhook delivery %s attempt %d: %s (%s, %d ms) -> %s", delivery_id, claim["attempt"],
             outcome.status_code, outcome.error or "ok", outcome.latency_ms, decided)
    return decided


def register_webhooks(pgq: PgQueuer, pool: AsyncConnectionPool, settings: WebhookSettings | None = None) -> None:
    """Attach `webhook_delivery` and the daily credits.expiring schedule (the light lane)."""
    settings = settings or WebhookSettings.from_env()

    @pgq.entrypoint("webhook_delivery")
    async def webhook_delivery(queued: Job) -> None:
        try:
            delivery_id = json.loads(queued.payload or b"")["delivery_id"]
        except (ValueError, KeyError, TypeError):
            log.error("dropping webhook entry %s: %r", queued.id, queued.payload)
            return
        try:
            await deliver_once(pool, delivery_id, settings)
        except Exception as error:  # noqa: BLE001 - the database was unreachable: try again
            # the next claim starts a new attempt, so an attempt whose outcome was lost
            # is sent again (at least once) and never recorded twice
            log.warning("webhook delivery %s: %s; re-delivering", delivery_id, error)
            raise RetryRequested(delay=settings.retry_base, reason=str(error)[:500]) from error

    @pgq.schedule("emit_credits_expiring", CREDITS_EXPIRING_CRON)
    async def emit_credits_expiring(schedule) -> None:
        async with pool.connection() as conn:
            cur = await conn.execute("select app.emit_credits_expiring()")
            log.info("credits.expiring: %d event(s)", (await cur.fetchone())[0])
