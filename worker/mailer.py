"""The mail transport of this worker process (opened on first use, reused for every email
the process delivers, closed when the process shuts down), and the flag that keeps one
outbox drain running at a time."""

from __future__ import annotations

import redis

from worker.domain.mail import EmlDirectoryTransport, MailTransport, SmtpTarget, SmtpTransport
from worker.redis_client import redis_client
from worker.settings import Settings, get_settings

_transport: MailTransport | None = None


def make_transport(settings: Settings) -> MailTransport:
    if settings.smtp_url:
        return SmtpTransport(
            SmtpTarget.from_url(settings.smtp_url), timeout=settings.smtp_timeout_seconds
        )
    return EmlDirectoryTransport(settings.outbox_dir)


def mail_transport() -> MailTransport:
    global _transport
    if _transport is None:
        _transport = make_transport(get_settings())
    return _transport


def close_mail_transport() -> None:
    global _transport
    transport, _transport = _transport, None
    if transport is not None:
        transport.close()


DRAIN_FLAG = "securesend:mail:drain-pending"


def claim_drain(settings: Settings) -> bool:
    """True when the caller should publish a drain: no drain is pending or running.

    Sends arrive faster than emails need a task each; with the flag, a burst of sends
    costs one drain that delivers everything due in batches over one connection. The flag
    expires on its own if its drain dies; without Redis every caller publishes."""
    if not settings.redis_url:
        return True
    ttl = int(settings.mail_task_time_limit_seconds * 1.5)
    try:
        return bool(redis_client(settings.redis_url).set(DRAIN_FLAG, "1", nx=True, ex=ttl))
    except redis.RedisError:
        return True


def release_drain(settings: Settings) -> None:
    if settings.redis_url:
        try:
            redis_client(settings.redis_url).delete(DRAIN_FLAG)
        except redis.RedisError:
            pass  # it expires by itself
