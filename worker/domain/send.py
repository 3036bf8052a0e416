"""SendMessage (SPEC 3): look up, check every rule, and perform a send in one transaction.

`send_message` is the only entry point; the Celery task and nothing else calls it. It
never commits: the caller's transaction makes the send (status change, recipients bound,
deliveries, invitations, outbox rows, quota, stored response) all-or-nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain import clock, errors, webhooks
from worker.domain.attachments import attachments_of
from worker.domain.auth import normalize_email
from worker.domain.drafts import Draft, load_addressees, load_draft_for_update
from worker.domain.emails import OutboxWriter, notification_context
from worker.domain.errors import ApiError
from worker.domain.invitations import invite_new_users
from worker.domain.mailbox import searchable_text
from worker.domain.rendering import DEFAULT_LOCALE, Renderer
from worker.domain.rules import SendContext, distinct_addresses, run_send_rules
from worker.domain.secrets import Keys, hash_password
from worker.domain.send_writes import (
    RECORD_JOB,
    SendWrites,
    SentMessage,
    claims_quota,
    write_send,
)
from worker.domain.suppressions import suppressed_among
from worker.models import (
    Channel,
    FyeoType,
    JobStatus,
    Lane,
    Message,
    MessageAction,
    MessageStatus,
    SendJob,
    User,
)
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One SendMessage to perform (the job's fields, its secrets opened)."""

    job_id: str
    sender_guid: str
    message_guid: str
    invite_new_users: bool = False
    send_email_notification: bool = True
    notification_formats: tuple[str, ...] = ("Text", "Html")
    lane: Lane = Lane.BULK
    password: str = field(default="", repr=False)
    cra_code: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What SendMessage answers: an HTTP status and the body."""

    http_status: int
    body: dict[str, Any]
    # Emails this send put in the outbox: delivery is queued once the transaction commits.
    email_ids: tuple[int, ...] = ()
    recipients: int = 0  # the distinct addresses a successful send delivered to
    webhook_events: int = 0  # deliveries of webhook events it queued (in `email_ids` too)

    @property
    def result_code(self) -> str:
        status = self.body.get("responseStatus")
        return str(status["errorCode"]) if isinstance(status, dict) else "OK"

    @classmethod
    def from_error(cls, error: ApiError) -> SendOutcome:
        return cls(http_status=error.http_status, body=error.response_body())


def _sender_exists(session: Session, guid: str) -> bool:
    return session.scalar(select(User.id).where(User.guid == guid)) is not None


def _is_recalled(message: Draft, parent: Message | None) -> bool:
    if message.status is MessageStatus.RECALLED:
        return True
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
        message = load_draft_for_update(session, request.message_guid, now=now)
        if message is None or message.sender.guid != request.sender_guid:
            if not _sender_exists(session, request.sender_guid):
                raise ApiError(errors.SESSION_INVALID)
            raise ApiError(errors.MESSAGE_NOT_FOUND)
        # Only a reply or a forward has one: the ORM loads it, with its sender if asked.
        parent = session.get(Message, message.parent_id) if message.parent_id else None
        if _is_recalled(message, parent):
            raise ApiError(errors.MESSAGE_RECALLED)
        if message.status is MessageStatus.SENT:
            outcome = SendOutcome(http_status=200, body=message.send_response or {})
        else:
            writes = _send_draft(
                session,
                message=message,
                parent=parent,
                request=request,
                now=now,
                settings=settings,
                keys=keys,
            )
            return _write(session, request=request, writes=writes)
    except ApiError as error:
        outcome = SendOutcome.from_error(error)
    record_job_outcome(session, request=request, outcome=outcome, now=now)
    return outcome


def _send_draft(
    session: Session,
    *,
    message: Draft,
    parent: Message | None,
    request: SendRequest,
    now: datetime,
    settings: Settings,
    keys: Keys,
) -> SendWrites:
    """Check rules 5-22, invite the new users, render the notifications: everything the
    send will write, the job's answer included."""
    sender = message.sender
    addresses = distinct_addresses([(r.kind, r.address) for r in message.recipients])
    ctx = SendContext(
        session=session,
        message=message,
        sender=sender,
        parent=parent,
        password=request.password,
        cra_code=request.cra_code,
        invite_new_users=request.invite_new_users,
        now=now,
        addresses=addresses,
        users_by_email=message.users | load_addressees(session, list(message.unmatched)),
        claims_with_the_writes=claims_quota(session),
        attachments=attachments_of(session, message.id) if message.attachment_count else (),
    )
    run_send_rules(ctx)

    renderer = Renderer(settings)
    outbox = OutboxWriter(
        renderer=renderer,
        settings=settings,
        keys=keys,
        sender=sender,
        now=now,
        lane=request.lane,
        # Read with the draft; the few addresses the database could not fold, here.
        suppressed=message.suppressed | suppressed_among(session, message.unmatched, now=now),
        # A group without webhook endpoints costs no query here (SPEC 8).
        webhooks=(
            webhooks.targets_of(session.connection(), sender.group.id)
            if sender.group.webhook_events
            else ()
        ),
    )
    invited = invite_new_users(ctx, outbox=outbox)
    ctx.users_by_email.update(invited)
    context = notification_context(message, sender, settings, attachments=ctx.attachments)
    neutral = renderer.render(
        "notification",
        context,
        locale=DEFAULT_LOCALE,
        group=sender.group.name,
    )
    body = {
        "notificationBodyText": neutral.text if "Text" in request.notification_formats else None,
        "notificationBodyHtml": neutral.html if "Html" in request.notification_formats else None,
        "notificationSent": request.send_email_notification,
        "responseStatus": None,
    }
    recipients = [ctx.users_by_email[a.email] for a in ctx.addresses]
    search_text, search_bcc = searchable_text(
        message.subject,
        sender,
        [(a.kind, a.email, user) for a, user in zip(ctx.addresses, recipients, strict=True)],
    )
    if request.send_email_notification:
        outbox.queue_notifications(
            message, recipients, context=context, rendered={DEFAULT_LOCALE: neutral}
        )
        # False when every recipient's address is on the suppression list (SPEC 8).
        body["notificationSent"] = outbox.notified
    outbox.queue_events(message, recipients=len(ctx.addresses))
    unique_password = message.fyeo_type is FyeoType.UNIQUE_PASSWORD
    return SendWrites(
        message=SentMessage(
            message_id=message.id,
            sender_id=message.sender.id,
            sent_at=now,
            send_response=body,
            search_text=search_text,
            search_bcc=search_bcc,
            password_hash=hash_password(request.password) if unique_password else None,
            expires_at=message.expiry_date,
        ),
        # Every recipient row bound to its user; one delivery (inbox entry) per address.
        bindings=[
            (r.id, ctx.users_by_email[normalize_email(r.address)].id) for r in message.recipients
        ],
        deliveries=[(user.id, a.kind) for a, user in zip(ctx.addresses, recipients, strict=True)],
        emails=outbox.rows,
        job_id=request.job_id,
        job=job_outcome_values(SendOutcome(http_status=200, body=body), now=now),
        quota=ctx.deferred_claim,
    )


def _write(session: Session, *, request: SendRequest, writes: SendWrites) -> SendOutcome:
    written = write_send(session, writes)
    if not written.claimed:
        # Rule 22's claim, left to the writes, failed: nothing was written.
        raise ApiError(errors.DAILY_LIMIT_REACHED)
    if not written.job_recorded:
        _create_job_row(session, request=request, values=writes.job)
    return SendOutcome(
        http_status=200,
        body=writes.message.send_response,
        email_ids=written.email_ids,
        recipients=len(writes.deliveries),
        webhook_events=sum(1 for row in writes.emails if row["channel"] is Channel.WEBHOOK),
    )


def job_outcome_values(outcome: SendOutcome, *, now: datetime) -> dict[str, Any]:
    """The job row's columns for `outcome` (the send started at `now`)."""
    return {
        "status": JobStatus.SUCCEEDED if outcome.http_status < 400 else JobStatus.FAILED,
        "http_status": outcome.http_status,
        "result_code": outcome.result_code,
        "response": outcome.body,
        "started_at": now,
        "finished_at": clock.now(),
    }


def record_job_outcome(
    session: Session, *, request: SendRequest, outcome: SendOutcome, now: datetime
) -> None:
    """Store the answer on the job row, creating the row for jobs enqueued without HTTP
    (when the sender exists; an unknown sender has no jobs to look at)."""
    values = job_outcome_values(outcome, now=now)
    updated = session.connection().execute(RECORD_JOB, {"job_id": request.job_id, **values})
    if not updated.rowcount:
        _create_job_row(session, request=request, values=values)


def _create_job_row(session: Session, *, request: SendRequest, values: dict[str, Any]) -> None:
    sender_id = session.scalar(select(User.id).where(User.guid == request.sender_guid))
    if sender_id is not None:
        session.add(
            SendJob(
                id=request.job_id,
                user_id=sender_id,
                message_guid=request.message_guid,
                lane=request.lane,
                **values,
            )
        )
