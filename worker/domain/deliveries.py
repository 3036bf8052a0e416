"""What became of each email of a message, as its sender may read it
(`GET /messages/{guid}/deliveries`, SPEC 8): one record per email the send queued (its
notifications and invitations).

A record is the email's outbox row, told in the caller's terms: `queued` until the relay
accepts it (a retry or a wait for the relay's pace is still queued, with the last reply
as its reason), then `sent`, or `failed` when the relay refused it for good or its
attempts were spent; `suppressed` when its address is on the suppression list (it was
never sent; the reason says which entry); `bounced` or `complained` when a report came
back for it (worker.domain.bounces; the reason says which). Records last as long as the
outbox keeps the row (RETENTION_DAYS).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain import errors
from worker.domain.auth import Caller
from worker.domain.errors import ApiError
from worker.models import PENDING_EMAIL, Channel, EmailKind, EmailStatus, Message, OutboxEmail


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    address: str
    kind: EmailKind
    status: str  # queued, sent, failed, suppressed, bounced or complained
    reason: str | None  # the relay's last reply when it refused or deferred; a suppression's
    attempts: int
    queued_at: datetime
    sent_at: datetime | None
    updated_at: datetime  # when its status or reply last changed


def _status(status: EmailStatus) -> str:
    return "queued" if status in PENDING_EMAIL else status.value


def message_deliveries(session: Session, *, caller: Caller, guid: str) -> list[DeliveryRecord]:
    """The emails of the caller's message `guid`, in the order they were queued. Errors:
    929 (no such message, or not the caller's)."""
    sender_id = session.scalar(select(Message.sender_id).where(Message.guid == guid))
    if sender_id is None or sender_id != caller.user_id:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    rows = session.execute(
        select(
            OutboxEmail.recipient,
            OutboxEmail.kind,
            OutboxEmail.status,
            OutboxEmail.last_error,
            OutboxEmail.attempts,
            OutboxEmail.created_at,
            OutboxEmail.sent_at,
            OutboxEmail.updated_at,
        )
        .join(Message, Message.id == OutboxEmail.message_id)
        .where(Message.guid == guid, OutboxEmail.channel == Channel.EMAIL)
        .order_by(OutboxEmail.id)
    )
    return [
        DeliveryRecord(
            address=recipient,
            kind=kind,
            status=_status(status),
            reason=None if status is EmailStatus.SENT else last_error,
            attempts=attempts,
            queued_at=created_at,
            sent_at=sent_at,
            updated_at=updated_at or created_at,
        )
        for recipient, kind, status, last_error, attempts, created_at, sent_at, updated_at in rows
    ]
