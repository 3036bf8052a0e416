"""Drafts and reading: PreCreateMessage, SaveMessage, GetMessage (SPEC 4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, selectinload

from worker.domain import errors, webhooks
from worker.domain.attachments import AttachmentInfo, copy_for_forward, info_of
from worker.domain.auth import Caller, normalize_email
from worker.domain.errors import ApiError
from worker.domain.reading import check_fyeo_password, recipient_delivery
from worker.domain.rules import (
    check_confidential_feature,
    check_forward_allowed,
    check_fyeo_feature,
    check_reply_all_allowed,
    check_reply_allowed,
)
from worker.domain.secrets import Keys
from worker.models import (
    BodyFormat,
    Delivery,
    FyeoType,
    Message,
    MessageAction,
    MessageStatus,
    Recipient,
    RecipientKind,
    User,
    new_guid,
)


@dataclass(frozen=True, slots=True)
class MessageOptions:
    allow_forward: bool = True
    allow_reply: bool = True
    allow_reply_all: bool = True
    allow_tracking: bool = False
    fyeo_type: FyeoType = FyeoType.DISABLED
    confidential: bool = False
    share_tracking: bool = False


@dataclass(frozen=True, slots=True)
class DraftChanges:
    """What SaveMessage was given; None means "leave as it is"."""

    to: list[str] | None = None
    cc: list[str] | None = None
    bcc: list[str] | None = None
    subject: str | None = None
    body: str | None = None
    body_format: BodyFormat | None = None
    options: MessageOptions | None = None
    expiry_date: datetime | None = None
    expiry_given: bool = False


def _caller_user(session: Session, caller: Caller) -> User:
    return session.get_one(User, caller.user_id)


def _is_participant(session: Session, message: Message, user_id: int) -> bool:
    if message.sender_id == user_id:
        return True
    return bool(
        session.scalar(
            select(exists().where(Delivery.message_id == message.id, Delivery.user_id == user_id))
        )
    )


def precreate_message(
    session: Session,
    *,
    caller: Caller,
    action: MessageAction,
    parent_guid: str | None,
    parent_password: str,
    now: datetime,
) -> str:
    """Create an empty draft (New, or a Reply/ReplyAll/Forward of a message the caller
    took part in) and return its GUID. Errors: 929 (as 403), 907, 915, 38, 908, 909, 77."""
    user = _caller_user(session, caller)
    parent: Message | None = None
    if action is not MessageAction.NEW:
        if parent_guid is None:
            raise ApiError(errors.PARENT_NOT_FOUND)
        parent = session.scalars(select(Message).where(Message.guid == parent_guid)).one_or_none()
        if parent is None or parent.status is MessageStatus.DRAFT and parent.sender_id != user.id:
            raise ApiError(errors.PARENT_NOT_FOUND)
        if not _is_participant(session, parent, user.id):
            raise ApiError(errors.NO_ACCESS)
        if parent.status is MessageStatus.RECALLED:
            raise ApiError(errors.MESSAGE_RECALLED)
        check_fyeo_password(parent, user, parent_password)
        check_forward_allowed(action, parent)
        check_reply_allowed(action, parent)
        check_reply_all_allowed(action, parent, None)
    guid = new_guid()
    message = Message(
        guid=guid,
        sender_id=user.id,
        parent_id=parent.id if parent else None,
        conversation_guid=conversation_of(parent) if parent else guid,
        action=action,
        status=MessageStatus.DRAFT,
        created_at=now,
    )
    if parent is not None and action is not MessageAction.FORWARD:
        message.subject = (
            parent.subject
            if parent.subject.lower().startswith("re:")
            else (f"RE: {parent.subject}")
        )
    session.add(message)
    session.flush()
    if parent is not None and action is MessageAction.FORWARD:
        copy_for_forward(session, parent_id=parent.id, message_id=message.id, now=now)
    return message.guid


def _own_message(session: Session, caller: Caller, guid: str) -> Message:
    message = session.scalars(
        select(Message)
        .where(Message.guid == guid)
        .options(selectinload(Message.recipients))
        .with_for_update(of=Message)
    ).one_or_none()
    if message is None or message.sender_id != caller.user_id:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    return message


def save_message(
    session: Session, *, caller: Caller, guid: str, changes: DraftChanges, now: datetime
) -> None:
    """Update a draft. Errors: 929, 906 (already sent or recalled), 77, 922, 930."""
    message = _own_message(session, caller, guid)
    if message.status is not MessageStatus.DRAFT:
        raise ApiError(errors.ALREADY_SENT)
    user = _caller_user(session, caller)
    to = changes.to if changes.to is not None else _addresses(message, RecipientKind.TO)
    cc = changes.cc if changes.cc is not None else _addresses(message, RecipientKind.CC)
    bcc = changes.bcc if changes.bcc is not None else _addresses(message, RecipientKind.BCC)
    options = changes.options or _options_of(message)
    check_reply_all_allowed(
        message.action, message.parent, [normalize_email(a) for a in [*to, *cc, *bcc]]
    )
    check_fyeo_feature(options.fyeo_type, user.group)
    check_confidential_feature(options.confidential, user.group)

    message.saved_at = now
    if changes.subject is not None:
        message.subject = changes.subject
    if changes.body is not None:
        message.body = changes.body
    if changes.body_format is not None:
        message.body_format = changes.body_format
    if changes.expiry_given:
        message.expiry_date = changes.expiry_date
    message.allow_forward = options.allow_forward
    message.allow_reply = options.allow_reply
    message.allow_reply_all = options.allow_reply_all
    message.allow_tracking = options.allow_tracking
    message.fyeo_type = options.fyeo_type
    message.confidential = options.confidential
    message.share_tracking = options.share_tracking
    if changes.to is not None or changes.cc is not None or changes.bcc is not None:
        message.recipients = [
            Recipient(kind=kind, address=address.strip(), position=position)
            for position, (kind, address) in enumerate(
                [(RecipientKind.TO, a) for a in to]
                + [(RecipientKind.CC, a) for a in cc]
                + [(RecipientKind.BCC, a) for a in bcc]
            )
            if address.strip()
        ]


def _addresses(message: Message, kind: RecipientKind) -> list[str]:
    return [r.address for r in message.recipients if r.kind is kind]


def _options_of(message: Message) -> MessageOptions:
    return MessageOptions(
        allow_forward=message.allow_forward,
        allow_reply=message.allow_reply,
        allow_reply_all=message.allow_reply_all,
        allow_tracking=message.allow_tracking,
        fyeo_type=message.fyeo_type,
        confidential=message.confidential,
        share_tracking=message.share_tracking,
    )


def conversation_of(message: Message) -> str:
    """The GUID of the first message of `message`'s reply tree."""
    return message.conversation_guid or message.guid


@dataclass(frozen=True, slots=True)
class Participant:
    """The sender or a recipient: a user, or an address that is no user's (no GUID, no
    names)."""

    guid: str | None
    email: str
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message as its reader sees it (GetMessage, SearchMessages): the vendor's
    `MessageSummary` with the body, the options and the creation and send times."""

    guid: str
    parent_guid: str | None
    conversation_guid: str  # the first message of its reply tree
    date: datetime  # when it was sent; for a draft, last saved
    status: MessageStatus
    action: MessageAction
    sender: Participant
    to: tuple[Participant, ...]
    cc: tuple[Participant, ...]
    bcc: tuple[Participant, ...]  # empty but for the message's sender
    subject: str
    body: str | None  # None when not asked for
    body_format: BodyFormat
    options: MessageOptions
    expiry_date: datetime | None
    recall_date: datetime | None
    recall_reason: str | None
    retrieved: bool  # whether the caller has read it
    created_at: datetime
    sent_at: datetime | None
    attachments: tuple[AttachmentInfo, ...]


def _participant(user: User | None, address: str) -> Participant:
    if user is None:
        return Participant(guid=None, email=address)
    return Participant(
        guid=user.guid, email=user.email, first_name=user.first_name, last_name=user.last_name
    )


def message_view(
    message: Message, *, include_body: bool, show_bcc: bool, retrieved: bool
) -> MessageView:
    """What a reader is shown of `message`: its Bcc recipients only with `show_bcc`, its
    body only with `include_body`."""

    def people(kind: RecipientKind) -> tuple[Participant, ...]:
        return tuple(_participant(r.user, r.address) for r in message.recipients if r.kind is kind)

    return MessageView(
        guid=message.guid,
        parent_guid=message.parent.guid if message.parent else None,
        conversation_guid=conversation_of(message),
        date=message.sent_at or message.saved_at or message.created_at,
        status=message.status,
        action=message.action,
        sender=_participant(message.sender, message.sender.email),
        to=people(RecipientKind.TO),
        cc=people(RecipientKind.CC),
        bcc=people(RecipientKind.BCC) if show_bcc else (),
        subject=message.subject,
        body=message.body if include_body else None,
        body_format=message.body_format,
        options=_options_of(message),
        expiry_date=message.expiry_date,
        recall_date=message.recall_date,
        recall_reason=message.recall_reason,
        retrieved=retrieved,
        created_at=message.created_at,
        sent_at=message.sent_at,
        attachments=tuple(info_of(a) for a in message.attachments),
    )


def get_message(
    session: Session,
    *,
    caller: Caller,
    guid: str,
    include_body: bool,
    fyeo_password: str | None,
    now: datetime,
) -> MessageView:
    """A message for its sender, or for a recipient once sent (not recalled or expired);
    a recipient who gets the body has retrieved it.

    Wrong FYEO passwords are counted (`keep_changes`). Errors: 929 (neither sender nor
    recipient, or a recipient asking for a draft), 915, 76, and for a FYEO body 51 (no
    `x-sm-password`), 38 (wrong password) or 39 (too many wrong ones)."""
    message = session.scalars(
        select(Message)
        .where(Message.guid == guid)
        .options(
            selectinload(Message.recipients).joinedload(Recipient.user),
            selectinload(Message.attachments),
        )
    ).one_or_none()
    if message is None:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    if message.sender_id == caller.user_id:
        return message_view(message, include_body=include_body, show_bcc=True, retrieved=True)
    delivery = recipient_delivery(
        session,
        message,
        user_id=caller.user_id,
        content=include_body,
        fyeo_password=fyeo_password,
        now=now,
    )
    if include_body and delivery.retrieved_at is None:
        delivery.retrieved_at = now  # the recipient has read it
    return message_view(
        message,
        include_body=include_body,
        show_bcc=False,
        retrieved=delivery.retrieved_at is not None,
    )


def recall_message(
    session: Session, *, caller: Caller, guid: str, reason: str | None, now: datetime, keys: Keys
) -> int:
    """Recall a message (sent or draft) of the caller's, and tell the group's webhook
    endpoints that want `message.recalled` (returns how many deliveries that queued).
    Idempotent: recalling again keeps the first recall and tells nobody again. Errors:
    929 (not the caller's), 921 (the group lacks Recall)."""
    message = _own_message(session, caller, guid)
    sender = _caller_user(session, caller)
    if not sender.group.feature_recall:
        raise ApiError(errors.NO_RECALL_FEATURE)
    if message.status is MessageStatus.RECALLED:
        return 0
    was_sent = message.status is MessageStatus.SENT
    message.status = MessageStatus.RECALLED
    message.recall_date = now
    message.recall_reason = reason
    session.execute(update(Delivery).where(Delivery.message_id == message.id).values(recalled=True))
    if not was_sent or webhooks.MESSAGE_RECALLED not in sender.group.webhook_events.split(","):
        return 0
    session.flush()
    return webhooks.emit_recalled(
        session.connection(),
        message_id=message.id,
        message_guid=message.guid,
        sender_guid=sender.guid,
        group_id=sender.group.id,
        now=now,
        keys=keys,
    )
