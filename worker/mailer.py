"""The mail transport of this worker process (opened on first use, reused for every email
the process delivers, closed when the process shuts down); publishing delivery, and the
flag that keeps one outbox drain running at a time."""

from __future__ import annotations

import logging

import redis
from celery import Celery

from worker.domain.mail import EmlDirectoryTransport, MailTransport, SmtpTarget, SmtpTransport
from worker.identity import worker_id
from worker.payloads import DeliverEmailsV1
from worker.queues import DELIVER_TASK, DRAIN_TASK, MAIL_QUEUE
from worker.redis_client import redis_client
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)
_transport: MailTransport | None = None
DELIVERY_CHUNK = 50


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


def _drain_ttl(settings: Settings) -> int:
    return int(settings.mail_task_time_limit_seconds * 1.5)


def _holder() -> str:
    return worker_id() or "-"


def claim_drain(settings: Settings) -> bool:
    """True when the caller should publish a drain: no drain is pending or running.

    Sends arrive faster than emails need a task each; with the flag, a burst of sends
    costs one drain that delivers everything due in batches over one connection. The flag
    names the worker that holds it (the one that published the drain, then the one that
    runs it): when that worker dies the lifeline releases it; it also expires on its own.
    Without Redis every caller publishes."""
    if not settings.redis_url:
        return True
    try:
        client = redis_client(settings.redis_url)
        return bool(client.set(DRAIN_FLAG, _holder(), nx=True, ex=_drain_ttl(settings)))
    except redis.RedisError:
        return True


def hold_drain(settings: Settings) -> None:
    """The drain that starts takes the flag over in its worker's name."""
    if settings.redis_url:
        try:
            client = redis_client(settings.redis_url)
            client.set(DRAIN_FLAG, _holder(), xx=True, ex=_drain_ttl(settings))
        except redis.RedisError:
            pass


# Delete the flag only if it still names the worker (a newer drain may hold it).
_RELEASE_IF_HELD_BY = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end"


def release_drain_held_by(settings: Settings, worker_ids: list[str]) -> None:
    """Release the flag if a worker of `worker_ids` (dead ones) holds it."""
    if settings.redis_url and worker_ids:
        client = redis_client(settings.redis_url)
        for dead in worker_ids:
            client.eval(_RELEASE_IF_HELD_BY, 1, DRAIN_FLAG, dead)


def release_drain(settings: Settings) -> None:
    if settings.redis_url:
        try:
            redis_client(settings.redis_url).delete(DRAIN_FLAG)
        except redis.RedisError:
            pass  # it expires by itself


def kick_delivery(app: Celery, settings: Settings) -> None:
    """Make sure a drain of the outbox is on its way (one at a time; see `claim_drain`)."""
    if not claim_drain(settings):
        return
    try:
        app.send_task(
            DRAIN_TASK, queue=MAIL_QUEUE, countdown=settings.mail_batch_window_seconds or None
        )
    except Exception:  # noqa: BLE001 - the outbox row is the record; the sweep retries
        release_drain(settings)
        logger.warning("could not queue an outbox drain; the sweep will")


def queue_delivery(
    app: Celery, email_ids: tuple[int, ...] | list[int], *, countdown: float | None = None
) -> None:
    """Publish delivery of `email_ids` in chunks. If publishing fails the emails stay
    queued in the outbox and the sweep picks them up."""
    for start in range(0, len(email_ids), DELIVERY_CHUNK):
        chunk = DeliverEmailsV1(email_ids=tuple(email_ids[start : start + DELIVERY_CHUNK]))
        try:
            app.send_task(
                DELIVER_TASK,
                args=[chunk.model_dump(by_alias=True)],
                queue=MAIL_QUEUE,
                countdown=countdown,
            )
        except Exception:  # noqa: BLE001 - the outbox row is the record; the sweep retries
            logger.warning(
                "could not queue delivery of %d emails; the sweep will", len(chunk.email_ids)
            )
