"""The data model. Secrets are stored only as hashes; GUIDs are 32-hex "N" strings."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from worker.domain import clock
from worker.telemetry import TRACEPARENT_MAX

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An index's `info` key naming the one database it exists on (a PostgreSQL GIN index);
# schema comparisons on another database leave it out (`included_on`).
ONLY_ON = "only_on"


def included_on(dialect: str) -> Callable[[object, str | None, str, bool, object], bool]:
    """Alembic's `include_object` for a database of `dialect`: every object but the
    models' indexes meant for another database."""

    def include(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
        if type_ != "index" or reflected:
            return True
        return bool(getattr(obj, "info", {}).get(ONLY_ON, dialect) == dialect)

    return include


def new_guid() -> str:
    return uuid.uuid4().hex


def guid_n_form(value: str) -> str:
    """A GUID in N (32 hex), D (dashed) or braced form, any case, as lower-case N form.
    Raises ValueError for anything else."""
    return uuid.UUID(value.strip()).hex


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table(model: type[Base]) -> Table:
    """A model's Core table, for hot-path statements that skip the ORM's bookkeeping."""
    return cast(Table, model.__table__)


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR with the member values; no native PG enum types to migrate.
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class UserState(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    PENDING = "pending"


class MessageStatus(enum.StrEnum):
    DRAFT = "Draft"
    SENT = "Sent"
    RECALLED = "Recalled"


class MessageAction(enum.StrEnum):
    NEW = "New"
    REPLY = "Reply"
    REPLY_ALL = "ReplyAll"
    FORWARD = "Forward"


class FyeoType(enum.StrEnum):
    DISABLED = "Disabled"
    ACCOUNT_PASSWORD = "AccountPassword"
    UNIQUE_PASSWORD = "UniquePassword"


class BodyFormat(enum.StrEnum):
    TEXT = "Text"
    HTML = "Html"


class RecipientKind(enum.StrEnum):
    TO = "To"
    CC = "Cc"
    BCC = "Bcc"


class BannedKind(enum.StrEnum):
    KEYWORD = "keyword"
    REGEX = "regex"


class EmailKind(enum.StrEnum):
    NOTIFICATION = "notification"
    INVITATION = "invitation"
    # Not an email: an event for a webhook endpoint, delivered by the same outbox
    # (`Channel.WEBHOOK`; worker.domain.webhooks).
    WEBHOOK = "webhook"


# What a report said of an email (`outbox.bounce`; worker.domain.bounces reads reports).
ReportKind = Literal["hard", "soft", "complaint"]


class Channel(enum.IntEnum):
    """How an outbox row goes out: its transport (docs/design.md, "Webhooks"). Stored as
    its number, the first column of the claim's index: each drain claims one channel."""

    EMAIL = 0  # SMTP
    WEBHOOK = 1  # an HTTP POST, signed (Standard Webhooks)


class EmailStatus(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    # Back in the queue unattempted: the pace held it, or the relay asked to slow down
    # (worker.domain.pace); `securesend emails` says "deferred (rate)".
    DEFERRED = "deferred"
    # Never sent: its address is on the suppression list (worker.domain.suppressions);
    # `last_error` says why.
    SUPPRESSED = "suppressed"
    # Sent, then reported back (worker.domain.bounces): `bounce` says hard or soft.
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class Lane(enum.IntEnum):
    """Who waits for a send, and so what goes first (docs/design.md, "Lanes"): stored as
    its number, which is the order in which the outbox is claimed."""

    INTERACTIVE = 0  # a person waits on the HTTP call
    BULK = 1  # another service enqueued it, or the caller asked not to wait

    @property
    def label(self) -> str:
        """The lane's name on the wire and in metrics: "interactive" or "bulk"."""
        return self.name.lower()

    @classmethod
    def named(cls, label: str) -> Lane:
        """The lane called `label` ("interactive" or "bulk"); KeyError for another."""
        return cls[label.upper()]


# What a row written before lanes existed is (migration 0011): every publisher was bulk.
_BULK = str(Lane.BULK.value)


# The statuses of an email that may still go; and the same as SQL: the outbox's partial
# index and the claim's WHERE clause say it in the same words, so that PostgreSQL (and
# SQLite) can see that the index covers the claim, with a prepared statement's generic
# plan too.
PENDING_EMAIL = (EmailStatus.QUEUED, EmailStatus.RETRYING, EmailStatus.DEFERRED)
PENDING_CONDITION = "status IN ({})".format(", ".join(f"'{s}'" for s in PENDING_EMAIL))
# The same as a condition, in the words of the outbox's partial index `ix_outbox_due`: a
# statement that says it so can walk that index.
IS_PENDING = text(PENDING_CONDITION)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


DEFAULT_MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 250 * 1024 * 1024


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    daily_messages: Mapped[int] = mapped_column(Integer, default=100)
    daily_invites: Mapped[int] = mapped_column(Integer, default=20)
    max_recipients: Mapped[int] = mapped_column(Integer, default=50)
    max_expiry_days: Mapped[int] = mapped_column(Integer, default=30)
    feature_fyeo: Mapped[bool] = mapped_column(Boolean, default=False)
    feature_confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    feature_message_expiry: Mapped[bool] = mapped_column(Boolean, default=False)
    feature_invite_user: Mapped[bool] = mapped_column(Boolean, default=False)
    feature_cra: Mapped[bool] = mapped_column(Boolean, default=False)
    feature_send_to_contacts: Mapped[bool] = mapped_column(Boolean, default=True)
    feature_recall: Mapped[bool] = mapped_column(Boolean, default=False)
    # Attachments (SPEC 9): the largest file, all of a message's files, and the allowed
    # extensions (lower case, comma-separated, without the dot; empty: any).
    max_attachment_bytes: Mapped[int] = mapped_column(
        BigInteger,
        default=DEFAULT_MAX_ATTACHMENT_BYTES,
        server_default=str(DEFAULT_MAX_ATTACHMENT_BYTES),
    )
    max_message_bytes: Mapped[int] = mapped_column(
        BigInteger, default=DEFAULT_MAX_MESSAGE_BYTES, server_default=str(DEFAULT_MAX_MESSAGE_BYTES)
    )
    attachment_types: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Bumped whenever this group's banned list (or the global list) changes, so a worker
    # rebuilds its compiled matcher only then.
    banned_version: Mapped[int] = mapped_column(Integer, default=0)
    # The events its enabled webhook endpoints want, comma-separated (empty: none),
    # kept by worker.domain.webhooks: the send reads it with the group, so a group
    # without endpoints costs no query.
    webhook_events: Mapped[str] = mapped_column(Text, default="", server_default="")


class BannedEntry(Base):
    """One banned keyword or regular expression; `group_id` NULL means the global list."""

    __tablename__ = "banned_entries"
    __table_args__ = (UniqueConstraint("group_id", "kind", "pattern"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    kind: Mapped[BannedKind] = mapped_column(_enum(BannedKind))
    pattern: Mapped[str] = mapped_column(String(1000))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(32), unique=True, default=new_guid)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored case-folded
    password_hash: Mapped[str | None] = mapped_column(String(200))  # argon2; None while pending
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    state: Mapped[UserState] = mapped_column(_enum(UserState), default=UserState.ACTIVE)
    locale: Mapped[str] = mapped_column(String(20), default="en")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)

    group: Mapped[Group] = relationship(lazy="joined", innerjoin=True)


class UserSession(Base):
    """A login session. Only an HMAC of the token is stored."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class AuthenticationToken(Base):
    """A long-lived token that opens sessions (GetNewAuthenticationToken, Authenticate).
    Only an HMAC of the token is stored."""

    __tablename__ = "authentication_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("owner_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))  # case-folded


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # The sender's Sent folder and drafts in their listing's order (SearchMessages);
        # every lookup by sender.
        Index("ix_messages_sender_listing", "sender_id", "sent_at", "id"),
        # Messages without search text (drafts, and sent before the send wrote it),
        # matched the slow way beside the trigram index's matches.
        Index(
            "ix_messages_unwritten",
            "sender_id",
            postgresql_where=text("search_text IS NULL"),
            sqlite_where=text("search_text IS NULL"),
        ),
        # Text search without reading the folder (pg_trgm; migration 0020).
        *(
            Index(
                f"ix_messages_{column}_trgm",
                column,
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
                info={ONLY_ON: "postgresql"},
            )
            for column in ("search_text", "search_bcc")
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(32), unique=True, default=new_guid)
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    # The GUID of the first message of its reply tree (its own for a new message); NULL
    # only for rows older than migration 0007 that it could not reach.
    conversation_guid: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[MessageAction] = mapped_column(_enum(MessageAction), default=MessageAction.NEW)
    status: Mapped[MessageStatus] = mapped_column(_enum(MessageStatus), default=MessageStatus.DRAFT)
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    body_format: Mapped[BodyFormat] = mapped_column(_enum(BodyFormat), default=BodyFormat.TEXT)
    allow_forward: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_reply: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_reply_all: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_tracking: Mapped[bool] = mapped_column(Boolean, default=False)
    share_tracking: Mapped[bool] = mapped_column(Boolean, default=False)
    fyeo_type: Mapped[FyeoType] = mapped_column(_enum(FyeoType), default=FyeoType.DISABLED)
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(String(200))  # UniquePassword, argon2
    expiry_date: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    saved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # last SaveMessage
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    recall_date: Mapped[datetime | None] = mapped_column(UtcDateTime())
    recall_reason: Mapped[str | None] = mapped_column(Text)
    # The body SendMessage answered on the first successful send (rule 4).
    send_response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What SearchMessages matches once it is sent, case-folded, written by the send:
    # subject, sender and To/Cc people; the Bcc people apart (the sender's to search).
    search_text: Mapped[str | None] = mapped_column(Text)
    search_bcc: Mapped[str | None] = mapped_column(Text)

    sender: Mapped[User] = relationship(foreign_keys=[sender_id])
    parent: Mapped[Message | None] = relationship(remote_side=[id])
    recipients: Mapped[list[Recipient]] = relationship(
        back_populates="message",
        order_by="Recipient.position",
        cascade="all, delete-orphan",
    )
    attachments: Mapped[list[Attachment]] = relationship(
        order_by="Attachment.id", cascade="all, delete-orphan", passive_deletes=True
    )


class Attachment(Base):
    """A file of a message (PreCreateAttachments). Its bytes are chunks under
    `content_key`, sealed with its data key (`sealed_key`: the key itself sealed under
    SECRET_KEY); a forward's copy shares the parent's content and key."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(32), unique=True, default=new_guid)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    file_name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_bytes: Mapped[int] = mapped_column(Integer)  # every chunk's size but the last's
    chunk_count: Mapped[int] = mapped_column(Integer)
    chunks_stored: Mapped[int] = mapped_column(Integer, default=0)
    content_key: Mapped[str] = mapped_column(String(32), index=True)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)


class AttachmentChunk(Base):
    """One uploaded chunk of an attachment's content: a keyed digest of its plain bytes
    (an upload again compares it) and the sealed bytes, NULL when they are kept in
    ATTACHMENTS_DIR instead."""

    __tablename__ = "attachment_chunks"

    content_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)  # from 1
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)


class Recipient(Base):
    """An address on a message (To/Cc/Bcc); bound to a user when the message is sent."""

    __tablename__ = "recipients"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[RecipientKind] = mapped_column(_enum(RecipientKind))
    position: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(320))  # as the sender typed it
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    message: Mapped[Message] = relationship(back_populates="recipients")
    user: Mapped[User | None] = relationship()


class Delivery(Base):
    """A sent message in one recipient's inbox."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "user_id"),
        # The Inbox, counted and paged from the index alone (SearchMessages), with or
        # without the messages one sent oneself (which "all folders" lists as Sent).
        Index(
            "ix_deliveries_listing",
            "user_id",
            "recalled",
            "created_at",
            "message_id",
            "expires_at",
            "from_self",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[RecipientKind] = mapped_column(_enum(RecipientKind))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    # When the recipient first read the message (GetMessage with its body).
    retrieved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The message's own, copied so that the Inbox needs no message rows: its expiry
    # (fixed once sent) and whether it was recalled (RecallMessage sets both).
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    recalled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The recipient is the message's sender (a message sent to oneself).
    from_self: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Invitation(Base):
    """An invitation of a Pending user; token and CRA code stored only as hashes."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    invited_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    cra_code_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class OutboxEmail(Base):
    """One email waiting for (or past) SMTP delivery.

    The rendered email is stored encrypted (`sealed_content`): an invitation carries a
    registration token, which must not sit in a column in plain text.
    """

    __tablename__ = "outbox"
    # The claim's order (worker.domain.delivery): one channel's pending rows only,
    # interactive first, then oldest first. Partial, so that a claim walks just what may
    # go, not the days of sent email that retention keeps.
    __table_args__ = (
        Index(
            "ix_outbox_due",
            "channel",
            "lane",
            "id",
            postgresql_where=text(PENDING_CONDITION),
            sqlite_where=text(PENDING_CONDITION),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    kind: Mapped[EmailKind] = mapped_column(_enum(EmailKind))
    recipient: Mapped[str] = mapped_column(String(320))
    message_id_header: Mapped[str] = mapped_column(String(200), unique=True)
    template: Mapped[str] = mapped_column(String(100))
    sealed_content: Mapped[str] = mapped_column(Text)
    status: Mapped[EmailStatus] = mapped_column(_enum(EmailStatus), default=EmailStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Indexed: /metrics reads only the emails created since its checkpoint.
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now, index=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    # A mail worker that claims the email holds it until then; past it, the claim has
    # lapsed (the worker died) and the email may be claimed again.
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The worker (WorkerHeartbeat.id) that holds the claim: when it stops beating, the
    # lifeline of another takes the email back before the claim lapses.
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # When its status or reply last changed (GET /messages/{guid}/deliveries' updatedAt);
    # NULL until a drain records an outcome.
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # hard, soft or complaint: what a report said of it (worker.domain.bounces).
    bounce: Mapped[str | None] = mapped_column(String(10))
    # When a worker first claimed it: /metrics' mail queue wait is the time from
    # `created_at` to this (worker.domain.metrics).
    first_claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The W3C traceparent of the send that queued it, when traces are on: its delivery
    # continues the caller's trace (worker.telemetry). Ids only.
    trace_parent: Mapped[str | None] = mapped_column(String(TRACEPARENT_MAX))
    # The lane of the send that queued it (`Lane`): interactive emails are claimed first.
    lane: Mapped[int] = mapped_column(SmallInteger, default=Lane.BULK, server_default=_BULK)
    # Its transport (`Channel`): an email, or an event for a webhook endpoint.
    channel: Mapped[int] = mapped_column(
        SmallInteger, default=Channel.EMAIL, server_default=str(int(Channel.EMAIL))
    )
    # A webhook event: the endpoint it goes to (`recipient` is the endpoint's uid,
    # `template` the event's type, `message_id_header` its webhook-id).
    endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    # When its holder handed it to the relay (the SMTP data's final dot about to go; NULL
    # again once the reply is recorded): a takeover leaves it to its holder, and a lapsed
    # claim takes it as sent rather than sending it twice (worker.domain.delivery).
    handed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # An email whose sender's group had webhook endpoints when it was queued: its
    # outcomes (sent, failed, bounced, complained) are events for them.
    webhook_group_id: Mapped[int | None] = mapped_column(Integer)


class WebhookEndpoint(Base):
    """A URL a sender group's events are posted to, signed per Standard Webhooks with the
    endpoint's secrets (sealed: `whsec_…` values never sit in a column in plain text).
    During a rotation the previous secret signs too, until `previous_until`."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("group_id", "url"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(40), unique=True)  # ep_…, what operators name
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(Text)  # comma-separated event types
    sealed_secret: Mapped[str] = mapped_column(Text)
    sealed_previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    # Failing since its first failure after a success (None: its last delivery went
    # through); disabled after WEBHOOK_DISABLE_AFTER_DAYS of it, or by a 410 at once.
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class Suppression(Base):
    """An address no email goes to (SPEC 8): added by an operator, or by a bounce or a
    complaint; active until `expires_at` (None: until removed). A removal is recorded,
    not deleted: who removed it and when."""

    __tablename__ = "suppressions"
    __table_args__ = (Index("ix_suppressions_address", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320))  # case-folded
    source: Mapped[str] = mapped_column(String(20))  # manual, bounce, complaint
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    removed_by: Mapped[str | None] = mapped_column(String(100))


class FyeoAttempt(Base):
    """Wrong For-Your-Eyes-Only passwords in a row, per message and reader."""

    __tablename__ = "fyeo_attempts"
    __table_args__ = (UniqueConstraint("message_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DailyUsage(Base):
    """A sender's sends and invites on one UTC day; incremented only under the limit."""

    __tablename__ = "daily_usage"
    __table_args__ = (UniqueConstraint("user_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    messages_sent: Mapped[int] = mapped_column(Integer, default=0)
    invites_sent: Mapped[int] = mapped_column(Integer, default=0)


class SendJob(Base):
    """One SendMessage job: what the HTTP call (or the jobs API) answers from."""

    __tablename__ = "send_jobs"
    __table_args__ = (Index("ix_send_jobs_status_published", "status", "published_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # = the Celery task id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    message_guid: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.QUEUED)
    http_status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Indexed: /metrics reads only the jobs created since its checkpoint.
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=clock.now, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # a worker took it
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # "OK", or the error code answered ("929", "ValidationException", …): for metrics.
    result_code: Mapped[str | None] = mapped_column(String(40))
    # The published payload (its secrets sealed), so a job whose broker message was lost
    # can be published again; `attempts` counts publications and redeliveries.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The lane it was published to (`Lane`): /metrics' queue wait per lane.
    lane: Mapped[int] = mapped_column(SmallInteger, default=Lane.BULK, server_default=_BULK)


class MetricTotal(Base):
    """What /metrics counted in the rows created before the checkpoint, which it no longer
    reads (worker.domain.metrics)."""

    __tablename__ = "metric_totals"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    label: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class MetricCheckpoint(Base):
    """Up to which creation time rows are in /metrics' totals: row 1 for jobs and emails,
    row 2 for webhook deliveries (an endpoint that keeps failing holds back only its
    own figures; worker.domain.metrics)."""

    __tablename__ = "metric_checkpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    until: Mapped[datetime] = mapped_column(UtcDateTime())


class WorkerHeartbeat(Base):
    """A worker process (`securesend worker`'s Celery) while it runs: written every few
    seconds with the tasks it holds, so that when it stops the others can tell it died
    and take back what it held (worker.lifeline)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # host.pid.random
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    # Ids of the tasks it has received and not finished, as of its last heartbeat.
    held: Mapped[list[str]] = mapped_column(JSON, default=list)
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # a clean stop
    # When another worker found it dead and took over what it held.
    buried_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Lease(Base):
    """A named lease one process holds at a time (the lifeline's sweep): whoever finds it
    expired may take it; the holder renews it."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
