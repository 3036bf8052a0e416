"""Delivering the outbox: claim emails, send them outside any transaction, record the result.

Claims make delivery safe with many mail workers: an email is claimed in a short
transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's write lock serialises
claims) by setting `claimed_until` (a lease of 1.5 times the mail task's time limit), so
a second worker skips it; a worker that dies leaves a claim that lapses and the email is
claimed again. Delivery is therefore
at-least-once; a duplicate after a crash carries the same `Message-ID`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from worker.db import Database
from worker.domain.mail import (
    MailTransport,
    OutgoingEmail,
    PermanentMailError,
    TransientMailError,
    build_mime,
)
from worker.domain.secrets import unseal
from worker.models import EmailStatus, Message, OutboxEmail, table
from worker.settings import Settings

logger = logging.getLogger(__name__)

PENDING = (EmailStatus.QUEUED, EmailStatus.RETRYING)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    max_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base_seconds=settings.mail_retry_base_seconds,
            max_seconds=settings.mail_retry_max_seconds,
            max_attempts=settings.mail_max_attempts,
        )

    def delay(self, attempts: int, *, rng: Callable[[], float] = random.random) -> float:
        """Exponential backoff with full jitter: uniform in [cap/2, cap], where cap doubles
        with each attempt from the base up to the maximum."""
        cap = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        return float(cap / 2 + rng() * cap / 2)


@dataclass
class DeliveryReport:
    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry_in: dict[int, float] = field(default_factory=dict)


def _claimable(now: datetime) -> Any:
    return (
        OutboxEmail.status.in_(PENDING),
        OutboxEmail.next_attempt_at <= now,
        or_(OutboxEmail.claimed_until.is_(None), OutboxEmail.claimed_until < now),
    )


def claim_lease(settings: Settings) -> timedelta:
    """How long a claim holds: past the mail task's hard time limit the task that made it
    is certainly gone, so the email may be claimed again."""
    return timedelta(seconds=settings.mail_task_time_limit_seconds * 1.5)


DRAIN_BATCH = 50


def claim(
    session: Session,
    email_ids: Sequence[int] | None,
    *,
    now: datetime,
    max_attempts: int,
    lease: timedelta,
    claimed_by: str | None = None,
) -> list[OutboxEmail]:
    """Claim those of `email_ids` that are due and unclaimed (the rest are skipped), or,
    with `email_ids` None, up to `DRAIN_BATCH` of any that are due, oldest first; each
    claim names the worker that holds it (`claimed_by`), for the lifeline.

    An email that has used all its attempts without a recorded result (its workers kept
    dying while sending it) is marked failed instead of being tried forever."""
    query = select(OutboxEmail).where(*_claimable(now)).order_by(OutboxEmail.id)
    if email_ids is None:
        query = query.limit(DRAIN_BATCH)
    else:
        query = query.where(OutboxEmail.id.in_(email_ids))
    rows = session.scalars(query.with_for_update(skip_locked=True)).all()
    claimed = []
    for row in rows:
        if row.attempts >= max_attempts:
            row.status = EmailStatus.FAILED
            row.last_error = f"gave up after {row.attempts} attempts without a result"
            continue
        row.claimed_until = now + lease
        row.claimed_by = claimed_by
        row.attempts += 1
        claimed.append(row)
    return claimed


def due_email_ids(session: Session, *, now: datetime, limit: int = 500) -> list[int]:
    """Emails that should be going out and that nobody holds (for the sweeper)."""
    return list(
        session.scalars(
            select(OutboxEmail.id).where(*_claimable(now)).order_by(OutboxEmail.id).limit(limit)
        )
    )


def _outgoing(row: OutboxEmail) -> OutgoingEmail:
    content = json.loads(unseal(row.sealed_content))
    return OutgoingEmail(
        message_id=row.message_id_header,
        recipient=row.recipient,
        recipient_name=content.get("toName", ""),
        subject=content["subject"],
        text=content["text"],
        html=content["html"],
    )


# Built once, through Core: one per email delivered.
_RECORD_EMAIL = update(table(OutboxEmail)).where(table(OutboxEmail).c.id == bindparam("email_id"))


def _record(session: Session, email_id: int, **values: Any) -> None:
    session.connection().execute(
        _RECORD_EMAIL, {"email_id": email_id, "claimed_until": None, "claimed_by": None, **values}
    )


def deliver(
    database: Database,
    transport: MailTransport,
    email_ids: Sequence[int] | None,
    *,
    settings: Settings,
    now: Callable[[], datetime],
    claimed_by: str | None = None,
) -> DeliveryReport:
    """Send the due ones among `email_ids` (None: a batch of whatever is due), each
    recorded as it goes; the claims name `claimed_by` (this worker).

    No transaction is open while the transport talks to the server. Transient failures
    are recorded as `retrying` with the time of the next attempt (returned in
    `retry_in`), permanent ones and the last allowed attempt as `failed` with the
    server's reply.
    """
    policy = RetryPolicy.from_settings(settings)
    report = DeliveryReport()
    claimed = database.run(
        lambda session: [
            (row.id, row.attempts, _outgoing(row))
            for row in claim(
                session,
                email_ids,
                now=now(),
                max_attempts=policy.max_attempts,
                lease=claim_lease(settings),
                claimed_by=claimed_by,
            )
        ]
    )
    for email_id, attempts, email in claimed:
        mime = build_mime(email, mail_from=settings.mail_from, date=now())
        try:
            transport.send(mime, recipient=email.recipient)
        except TransientMailError as e:
            if attempts >= policy.max_attempts:
                logger.warning("email %d failed after %d attempts", email_id, attempts)
                outcome: dict[str, Any] = {"status": EmailStatus.FAILED, "last_error": e.reply}
                report.failed.append(email_id)
            else:
                delay = policy.delay(attempts)
                logger.info("email %d: transient failure, retry in %.1fs", email_id, delay)
                outcome = {
                    "status": EmailStatus.RETRYING,
                    "last_error": e.reply,
                    "next_attempt_at": now() + timedelta(seconds=delay),
                }
                report.retry_in[email_id] = delay
        except PermanentMailError as e:
            logger.warning("email %d refused permanently", email_id)
            outcome = {"status": EmailStatus.FAILED, "last_error": e.reply}
            report.failed.append(email_id)
        else:
            outcome = {"status": EmailStatus.SENT, "sent_at": now(), "last_error": None}
            report.sent.append(email_id)
        _record_through_outage(database, partial(_record, email_id=email_id, **outcome))
    return report


# A database that went away while an email was being sent is waited for this long, so that
# what the server accepted is recorded (not sent again when the claim lapses) and the rest
# of the batch goes on; past it, the claims lapse and the sweep takes over.
RECORD_PATIENCE_SECONDS = 30.0


def _record_through_outage(database: Database, record: Callable[[Session], None]) -> None:
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    pause = 0.5
    while True:
        try:
            database.run(record)
            return
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("database unavailable; recording an email's outcome again")
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def email_statuses(session: Session, *, message_guid: str) -> list[dict[str, Any]]:
    """Every email of one message with its delivery status (`securesend emails GUID`)."""
    rows = session.scalars(
        select(OutboxEmail)
        .join(Message, Message.id == OutboxEmail.message_id)
        .where(Message.guid == message_guid)
        .order_by(OutboxEmail.id)
    ).all()
    return [
        {
            "id": row.id,
            "kind": row.kind.value,
            "recipient": row.recipient,
            "status": row.status.value,
            "attempts": row.attempts,
            "messageId": row.message_id_header,
            "lastError": row.last_error,
            "sentAt": row.sent_at.isoformat() if row.sent_at else None,
        }
        for row in rows
    ]


def drain(
    database: Database,
    transport: MailTransport,
    *,
    settings: Settings,
    now: Callable[[], datetime],
    budget_seconds: float,
    claimed_by: str | None = None,
) -> DeliveryReport:
    """Deliver batches of due emails until none is left or the time budget is spent."""
    total = DeliveryReport()
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        report = deliver(
            database, transport, None, settings=settings, now=now, claimed_by=claimed_by
        )
        total.sent += report.sent
        total.failed += report.failed
        total.retry_in.update(report.retry_in)
        if not (report.sent or report.failed or report.retry_in):
            break
    return total
