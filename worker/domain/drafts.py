"""A draft as SendMessage reads it: the message, its sender, the sender's group, its
recipients and their users, and how many files it has, in one Core statement, as plain
values.

The send's read was an ORM load (four entities per row, an identity map, a unit of work
to flush) that cost about 0.7 ms of a worker's CPU per send, a sixth of all it spent on
one; this statement costs about a fifth of that (docs/performance.md, issue 17). The
rules read these values; the parent message of a reply or forward, which only such sends
have, is still loaded through the ORM (`worker.domain.send`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from worker.domain.auth import normalize_email
from worker.domain.suppressions import suppression_reason
from worker.models import (
    Attachment,
    FyeoType,
    Group,
    Message,
    MessageAction,
    MessageStatus,
    Recipient,
    RecipientKind,
    Suppression,
    User,
    UserState,
    table,
)


class Person(Protocol):
    """Whoever has an address and a name: a `User`, or a draft's `Sender`."""

    @property
    def email(self) -> str: ...
    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SenderGroup:
    """What the sender's group allows (models.Group's columns the send reads)."""

    id: int
    name: str
    daily_messages: int
    daily_invites: int
    max_recipients: int
    max_expiry_days: int
    feature_fyeo: bool
    feature_confidential: bool
    feature_message_expiry: bool
    feature_invite_user: bool
    feature_cra: bool
    feature_send_to_contacts: bool
    banned_version: int
    webhook_events: str  # what its webhook endpoints want (empty: it has none)


@dataclass(frozen=True, slots=True)
class Sender:
    id: int
    guid: str
    email: str
    first_name: str
    last_name: str
    password_hash: str | None
    group: SenderGroup


@dataclass(frozen=True, slots=True)
class DraftRecipient:
    id: int
    kind: RecipientKind
    address: str  # as the sender typed it


@dataclass(frozen=True, slots=True)
class Addressee:
    """A user a send goes to (models.User's columns the send reads), or one it invites."""

    id: int
    email: str  # case-folded
    first_name: str
    last_name: str
    state: UserState
    locale: str


@dataclass(frozen=True, slots=True)
class Draft:
    """The message to send (or already sent: rule 4 answers its `send_response`)."""

    id: int
    guid: str
    parent_id: int | None
    action: MessageAction
    status: MessageStatus
    subject: str
    body: str
    fyeo_type: FyeoType
    confidential: bool
    expiry_date: datetime | None
    send_response: dict[str, Any] | None
    sender: Sender
    recipients: tuple[DraftRecipient, ...]  # in their order on the message
    # The recipients' users, read with the draft, by case-folded address; and the
    # addresses the database could not fold as `normalize_email` does (beyond ASCII, or
    # other whitespace than spaces), whose users `load_addressees` finds.
    users: dict[str, Addressee]
    unmatched: tuple[str, ...]
    attachment_count: int  # its files (the send reads them only when it has some)
    # The recipients' addresses on the suppression list now, read with the draft, each
    # with its reason (`unmatched` ones aside: worker.domain.suppressions finds theirs).
    suppressed: dict[str, str]


_MESSAGES, _USERS = table(Message), table(User)
_GROUPS, _RECIPIENTS = table(Group), table(Recipient)


def _columns(view: type[Any], *, besides: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The columns a view is built from, in the order of its fields (and their order in the row)."""
    return tuple(f.name for f in fields(view) if f.name not in besides)


_DRAFT_COLUMNS = _columns(
    Draft,
    besides=("sender", "recipients", "users", "unmatched", "attachment_count", "suppressed"),
)
_SENDER_COLUMNS = _columns(Sender, besides=("group",))
_GROUP_COLUMNS = _columns(SenderGroup)
_RECIPIENT_COLUMNS = _columns(DraftRecipient)
ADDRESSEE_COLUMNS = tuple(_USERS.c[name] for name in _columns(Addressee))
_ADDRESSEES_ALIAS = _USERS.alias("addressee")
# An address folded by the database: `normalize_email` where it is ASCII with spaces.
_FOLDED = func.lower(func.trim(_RECIPIENTS.c.address))
_ATTACHMENTS = table(Attachment)
_SUPPRESSIONS = table(Suppression)
# The recipient's active suppression (the latest, should there be two): its source and
# reason, as scalar subqueries, so that a recipient is one row whatever the list holds.
_SUPPRESSION = [
    select(_SUPPRESSIONS.c[name])
    .where(
        _SUPPRESSIONS.c.address == _FOLDED,
        _SUPPRESSIONS.c.removed_at.is_(None),
        or_(_SUPPRESSIONS.c.expires_at.is_(None), _SUPPRESSIONS.c.expires_at > bindparam("now")),
    )
    .order_by(_SUPPRESSIONS.c.id.desc())
    .limit(1)
    .correlate(_RECIPIENTS)
    .scalar_subquery()
    for name in ("source", "reason")
]
_ATTACHMENT_COUNT = (
    select(func.count())
    .where(_ATTACHMENTS.c.message_id == _MESSAGES.c.id)
    .correlate(_MESSAGES)
    .scalar_subquery()
)

# One row per recipient (one with NULL recipient columns for a draft without any). The
# row lock serialises concurrent sends of one draft (PostgreSQL); on SQLite the
# transaction already holds the database write lock. Built once.
_DRAFT_FOR_UPDATE = (
    select(
        *(_MESSAGES.c[name] for name in _DRAFT_COLUMNS),
        *(_USERS.c[name] for name in _SENDER_COLUMNS),
        *(_GROUPS.c[name] for name in _GROUP_COLUMNS),
        *(_RECIPIENTS.c[name] for name in _RECIPIENT_COLUMNS),
        _FOLDED,
        *(_ADDRESSEES_ALIAS.c[name] for name in _columns(Addressee)),
        _ATTACHMENT_COUNT,
        *_SUPPRESSION,
    )
    .join(_USERS, _USERS.c.id == _MESSAGES.c.sender_id)
    .join(_GROUPS, _GROUPS.c.id == _USERS.c.group_id)
    .outerjoin(_RECIPIENTS, _RECIPIENTS.c.message_id == _MESSAGES.c.id)
    .outerjoin(_ADDRESSEES_ALIAS, _ADDRESSEES_ALIAS.c.email == _FOLDED)
    .where(_MESSAGES.c.guid == bindparam("guid"))
    .order_by(_RECIPIENTS.c.position)
    .with_for_update(of=_MESSAGES)
)
_SENDER_AT = len(_DRAFT_COLUMNS)
_GROUP_AT = _SENDER_AT + len(_SENDER_COLUMNS)
_RECIPIENT_AT = _GROUP_AT + len(_GROUP_COLUMNS)
_FOLDED_AT = _RECIPIENT_AT + len(_RECIPIENT_COLUMNS)
_ADDRESSEE_AT = _FOLDED_AT + 1
_ATTACHMENT_COUNT_AT = _ADDRESSEE_AT + len(_columns(Addressee))
_SUPPRESSION_AT = _ATTACHMENT_COUNT_AT + 1


def load_draft_for_update(session: Session, guid: str, *, now: datetime) -> Draft | None:
    """The message `guid` with its sender, the sender's group, its recipients, their users
    and which of them are suppressed at `now`, locked for this transaction; None when
    there is no such message."""
    rows = session.connection().execute(_DRAFT_FOR_UPDATE, {"guid": guid, "now": now}).all()
    if not rows:
        return None
    first = rows[0]
    group = SenderGroup(**_named(_GROUP_COLUMNS, first, _GROUP_AT))
    sender = Sender(**_named(_SENDER_COLUMNS, first, _SENDER_AT), group=group)
    recipients: list[DraftRecipient] = []
    users: dict[str, Addressee] = {}
    unmatched: list[str] = []
    suppressed: dict[str, str] = {}
    for row in rows:
        if row[_RECIPIENT_AT] is None:
            continue  # a draft without recipients
        recipient = DraftRecipient(*row[_RECIPIENT_AT:_FOLDED_AT])
        recipients.append(recipient)
        email = normalize_email(recipient.address)
        if row[_FOLDED_AT] != email:
            unmatched.append(email)  # the join may have missed its user
            continue
        if row[_ADDRESSEE_AT] is not None:
            users[email] = Addressee(*row[_ADDRESSEE_AT:_ATTACHMENT_COUNT_AT])
        source, reason = row[_SUPPRESSION_AT:]
        if source is not None:
            suppressed[email] = suppression_reason(source, reason)
    return Draft(
        **_named(_DRAFT_COLUMNS, first, 0),
        sender=sender,
        recipients=tuple(recipients),
        users=users,
        unmatched=tuple(unmatched),
        attachment_count=first[_ATTACHMENT_COUNT_AT],
        suppressed=suppressed,
    )


_ADDRESSEES = select(*ADDRESSEE_COLUMNS).where(
    _USERS.c.email.in_(bindparam("emails", expanding=True))
)


def load_addressees(session: Session, emails: list[str]) -> dict[str, Addressee]:
    """The users with these (case-folded) addresses, by address."""
    if not emails:
        return {}
    rows = session.connection().execute(_ADDRESSEES, {"emails": emails})
    return {row.email: Addressee(*row) for row in rows}


def _named(names: tuple[str, ...], row: Sequence[Any], start: int) -> dict[str, Any]:
    return dict(zip(names, row[start : start + len(names)], strict=True))
