"""SendMessage (SPEC 3): look up, check every rule, and perform a send in one transaction.

`send_message` is the only entry point; the Celery task and nothing else calls it. It
never commits: the caller's transaction makes the send (status change, recipients bound,
deliveries, invitations, outbox rows, quota, stored response) all-or-nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, contains_eager, joinedload, lazyload

from worker.domain import clock, errors
from worker.domain.auth import normalize_email
from worker.domain.emails import OutboxWriter, notification_context
from worker.domain.errors import ApiError
from worker.domain.invitations import invite_new_users
from worker.domain.mailbox import searchable_text
from worker.domain.rendering import DEFAULT_LOCALE, Renderer
from worker.domain.rules import SendContext, distinct_addresses, run_send_rules
from worker.domain.secrets import Keys, hash_password
from worker.models import (
    Delivery,
    FyeoType,
    JobStatus,
    Message,
    MessageAction,
    MessageStatus,
    Recipient,
    SendJob,
    User,
    table,
)
from worker.settings import Settings

logger = logging.getLogger(__name__)


# The send's statements, built once: building one (and its cache key) per send cost about
# as much as running it. Writes go through Core on the session's connection: the ORM's
# unit of work (flush, identity map, bulk bookkeeping) cost more than the statements.
MESSAGES = table(Message)
RECIPIENTS = table(Recipient)
SEND_JOBS = table(SendJob)
_MESSAGE_FOR_UPDATE = (
    select(Message)
    .join(Message.sender)
    .where(Message.guid == bindparam("guid"))
    .options(contains_eager(Message.sender), joinedload(Message.recipients))
    .with_for_update(of=Message)
)
_USERS_BY_EMAIL = (
    select(User)
    .where(User.email.in_(bindparam("emails", expanding=True)))
    .options(lazyload(User.group))  # a recipient's group plays no part in a send
)
_MARK_SENT = update(MESSAGES).where(MESSAGES.c.id == bindparam("sent_message_id"))
_BIND_RECIPIENT = (
    update(RECIPIENTS)
    .where(RECIPIENTS.c.id == bindparam("recipient_id"))
    .values(user_id=bindparam("bound_user_id"))
)
_INSERT_DELIVERIES = insert(table(Delivery))
_RECORD_JOB = update(SEND_JOBS).where(SEND_JOBS.c.id == bindparam("job_id"))


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One SendMessage to perform (the job's fields, its secrets opened)."""

    job_id: str
    sender_guid: str
    message_guid: str
    invite_new_users: bool = False
    send_email_notification: bool = True
    notification_formats: tuple[str, ...] = ("Text", "Html")
    password: str = field(default="", repr=False)
    cra_code: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What SendMessage answers: an HTTP status and the body."""

    http_status: int
    body: dict[str, Any]
    # Emails this send put in the outbox: delivery is queued once the transaction commits.
    email_ids: tuple[int, ...] = ()

    @property
    def result_code(self) -> str:
        status = self.body.get("responseStatus")
        return str(status["errorCode"]) if isinstance(status, dict) else "OK"

    @classmethod
    def from_error(cls, error: ApiError) -> SendOutcome:
        return cls(http_status=error.http_status, body=error.response_body())


def _load_message_for_update(session: Session, guid: str) -> Message | None:
    """The message with its sender (and the sender's group) and recipients.

    The row lock serialises concurrent sends of one draft (PostgreSQL); on SQLite the
    transaction already holds the database write lock."""
    return session.scalars(_MESSAGE_FOR_UPDATE, {"guid": guid}).unique().one_or_none()


def _sender_exists(session: Session, guid: str) -> bool:
    return session.scalar(select(User.id).where(User.guid == guid)) is not None


def _is_recalled(message: Message) -> bool:
    if message.status is MessageStatus.RECALLED:
        return True
    parent = message.parent
    return (
        message.action is not MessageAction.NEW
        and parent is not None
        and parent.status is MessageStatus.RECALLED
    )


def send_message(
    session: Session, *, request: SendRequest, now: datetime, settings: Settings, keys: Keys
) -> SendOutcome:
    """Perform one SendMessage and record its answer on the job.

    Idempotent: a message already sent answers the stored response of its first send and
    changes nothing (rule 4). A rule failure changes nothing but the job's record.
    """
    try:
        message = _load_message_for_update(session, request.message_guid)
        if message is None or message.sender.guid != request.sender_guid:
            if not _sender_exists(session, request.sender_guid):
                raise ApiError(errors.SESSION_INVALID)
            raise ApiError(errors.MESSAGE_NOT_FOUND)
        sender = message.sender
        if _is_recalled(message):
            raise ApiError(errors.MESSAGE_RECALLED)
        if message.status is MessageStatus.SENT:
            outcome = SendOutcome(http_status=200, body=message.send_response or {})
        else:
            outcome = _send_draft(
                session,
                message=message,
                sender=sender,
                request=request,
                now=now,
                settings=settings,
                keys=keys,
            )
    except ApiError as error:
        outcome = SendOutcome.from_error(error)
    record_job_outcome(session, request=request, outcome=outcome, now=now)
    return outcome


def _send_draft(
    session: Session,
    *,
    message: Message,
    sender: User,
    request: SendRequest,
    now: datetime,
    settings: Settings,
    keys: Keys,
) -> SendOutcome:
    addresses = distinct_addresses([(r.kind, r.address) for r in message.recipients])
    users = session.scalars(_USERS_BY_EMAIL, {"emails": [a.email for a in addresses]})
    ctx = SendContext(
        session=session,
        message=message,
        sender=sender,
        parent=message.parent,
        password=request.password,
        cra_code=request.cra_code,
        invite_new_users=request.invite_new_users,
        now=now,
        addresses=addresses,
        users_by_email={u.email: u for u in users},
    )
    run_send_rules(ctx)

    renderer = Renderer(settings)
    outbox = OutboxWriter(
        session, renderer=renderer, settings=settings, keys=keys, sender=sender, now=now
    )
    invited = invite_new_users(ctx, outbox=outbox)
    ctx.users_by_email.update(invited)
    _bind_recipients(session, ctx)
    neutral = renderer.render(
        "notification",
        notification_context(message, sender, settings),
        locale=DEFAULT_LOCALE,
        group=sender.group.name,
    )
    body = {
        "notificationBodyText": neutral.text if "Text" in request.notification_formats else None,
        "notificationBodyHtml": neutral.html if "Html" in request.notification_formats else None,
        "notificationSent": request.send_email_notification,
        "responseStatus": None,
    }
    search_text, search_bcc = searchable_text(
        message.subject,
        sender,
        [(a.kind, a.email, ctx.users_by_email[a.email]) for a in ctx.addresses],
    )
    sent: dict[str, Any] = {
        "sent_message_id": message.id,
        "status": MessageStatus.SENT,
        "sent_at": now,
        "send_response": body,
        "search_text": search_text,
        "search_bcc": search_bcc,
    }
    if message.fyeo_type is FyeoType.UNIQUE_PASSWORD:
        sent["password_hash"] = hash_password(request.password)
    session.connection().execute(_MARK_SENT, sent)
    if request.send_email_notification:
        outbox.queue_notifications(
            message,
            [ctx.users_by_email[a.email] for a in ctx.addresses],
            rendered={DEFAULT_LOCALE: neutral},
        )
    logger.info(
        "message %s sent to %d recipients (%d invited)",
        message.guid,
        len(ctx.addresses),
        len(invited),
    )
    return SendOutcome(http_status=200, body=body, email_ids=tuple(outbox.email_ids()))


def _bind_recipients(session: Session, ctx: SendContext) -> None:
    """Bind every recipient to its user and put the message in each inbox: two
    statements (executemany), however many recipients there are."""
    connection = session.connection()
    connection.execute(
        _BIND_RECIPIENT,
        [
            {
                "recipient_id": r.id,
                "bound_user_id": ctx.users_by_email[normalize_email(r.address)].id,
            }
            for r in ctx.message.recipients
        ],
    )
    connection.execute(
        _INSERT_DELIVERIES,
        [
            {
                "message_id": ctx.message.id,
                "user_id": ctx.users_by_email[a.email].id,
                "kind": a.kind,
                "created_at": ctx.now,
                "expires_at": ctx.message.expiry_date,
                "recalled": False,
            }
            for a in ctx.addresses
        ],
    )


def record_job_outcome(
    session: Session, *, request: SendRequest, outcome: SendOutcome, now: datetime
) -> None:
    """Store the answer on the job row, creating the row for jobs enqueued without HTTP
    (when the sender exists; an unknown sender has no jobs to look at)."""
    status = JobStatus.SUCCEEDED if outcome.http_status < 400 else JobStatus.FAILED
    values: dict[str, Any] = {
        "status": status,
        "http_status": outcome.http_status,
        "result_code": outcome.result_code,
        "response": outcome.body,
        "started_at": now,
        "finished_at": clock.now(),
    }
    updated = (
        session.connection().execute(_RECORD_JOB, {"job_id": request.job_id, **values}).rowcount
    )
    if updated:
        return
    sender_id = session.scalar(select(User.id).where(User.guid == request.sender_guid))
    if sender_id is not None:
        session.add(
            SendJob(
                id=request.job_id,
                user_id=sender_id,
                message_guid=request.message_guid,
                **values,
            )
        )
