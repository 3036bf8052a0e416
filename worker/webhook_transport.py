"""The webhook transport (worker.domain.webhooks.WebhookPoster): an HTTP POST over
httpcore's connection pool, one per worker process.

- **No redirects**: httpcore follows none; a 3xx is a failed attempt.
- **Timeouts**: WEBHOOK_TIMEOUT_SECONDS (15 s) to connect, and for each read and write.
- **Public addresses only**, unless WEBHOOK_ALLOW_PRIVATE_NETWORKS: the host is resolved
  here and every address checked *as it is connected to* (`PublicOnlyBackend`), so a
  name that resolves to a public address when an endpoint is added and to a private one
  later (DNS rebinding) is refused too. TLS still checks the certificate against the
  URL's host name.
- At most `MAX_REPLY_BYTES` of a reply are read; only its status and `Retry-After` count.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore

from worker.domain.webhooks import WebhookRefused, WebhookReply, WebhookUnreachable
from worker.settings import Settings

MAX_REPLY_BYTES = 64 * 1024
USER_AGENT = "securesend-webhooks/1"


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not private, loopback,
    link-local, multicast, reserved or unspecified)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (an IP literal: itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise WebhookUnreachable(f"cannot resolve the endpoint's host: {e.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_public(host: str, port: int, *, allow_private: bool) -> list[str]:
    """`host`'s addresses, or WebhookRefused when one is not public (unless allowed)."""
    addresses = resolve(host, port)
    if not allow_private:
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise WebhookRefused(
                f"the endpoint's host resolves to a private or loopback address ({private[0]}); "
                "set WEBHOOK_ALLOW_PRIVATE_NETWORKS to allow it"
            )
    return addresses


class PublicOnlyBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses `check_public` allows."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = check_public(host, port, allow_private=self.allow_private)
        error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        raise error or httpcore.ConnectError(f"no address for {host}")


def _retry_after(value: str | None, *, now: datetime) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class HttpPoster:
    """POSTs events with one connection pool per process (connections are reused)."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.webhook_timeout_seconds
        self.pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=32,
            keepalive_expiry=30.0,
            network_backend=PublicOnlyBackend(
                allow_private=settings.webhook_allow_private_networks
            ),
        )

    def post(self, url: str, *, headers: dict[str, str], body: bytes) -> WebhookReply:
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self.timeout)
        sent = [(name.encode(), value.encode()) for name, value in headers.items()]
        sent.append((b"user-agent", USER_AGENT.encode()))
        try:
            with self.pool.stream(
                "POST", url, headers=sent, content=body, extensions={"timeout": timeouts}
            ) as response:
                read = 0
                for chunk in response.iter_stream():
                    read += len(chunk)
                    if read >= MAX_REPLY_BYTES:
                        break
                retry_after = next(
                    (
                        v.decode("latin-1")
                        for k, v in response.headers
                        if k.lower() == b"retry-after"
                    ),
                    None,
                )
                return WebhookReply(
                    response.status, _retry_after(retry_after, now=datetime.now(UTC))
                )
        except WebhookRefused:
            raise
        except httpcore.TimeoutException:
            raise WebhookUnreachable(f"no answer within {self.timeout:g} s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
            raise WebhookUnreachable(f"{type(e).__name__}: {e}"[:300]) from None

    def close(self) -> None:
        self.pool.close()
