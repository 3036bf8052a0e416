"""The caller's folders, filtered, sorted and paged: SearchMessages and GetInbox (SPEC 4).

One search is the same few statements whatever the mailbox's size: the count and the page
of ids, both over the same candidate rows (which an index gives in date order for each
folder: `ix_deliveries_user_created` for the Inbox, `ix_messages_sender_sent` for Sent),
then the page's messages with their people, and which of them the caller has read.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, union_all
from sqlalchemy.orm import Session, joinedload, selectinload

from worker.domain.auth import Caller
from worker.domain.messages import message_summary
from worker.models import (
    Delivery,
    Message,
    MessageStatus,
    Recipient,
    RecipientKind,
    User,
    table,
)


class Folder(enum.StrEnum):
    INBOX = "Inbox"  # sent to the caller, still readable (not recalled, not expired)
    SENT = "Sent"  # sent by the caller, recalled ones included
    DRAFT = "Draft"  # the caller's drafts
    TRASH = "Trash"  # the vendor's deleted messages: this service deletes none


ALL_FOLDERS = frozenset({Folder.INBOX, Folder.SENT, Folder.DRAFT})


@dataclass(frozen=True, slots=True)
class MessageSearch:
    folders: frozenset[Folder] = ALL_FOLDERS
    criteria: str = ""  # a part of the subject, or of a person's address or name
    ascending: bool = False  # by date; newest first by default
    page: int = 1
    page_size: int = 25


_messages = table(Message)
_deliveries = table(Delivery)
_recipients = table(Recipient)
_users = table(User)


def _like(column: Any, pattern: str) -> ColumnElement[bool]:
    return column.ilike(pattern, escape="\\")  # type: ignore[no-any-return]


def _matches(criteria: str, caller_id: int) -> ColumnElement[bool]:
    """The message's subject, its sender's or a recipient's address or name contains
    `criteria` (any case). Bcc recipients count only for the message's sender."""
    escaped = criteria.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    sender = _users.alias("sender")
    person = _users.alias("person")
    return or_(
        _like(_messages.c.subject, pattern),
        exists().where(
            sender.c.id == _messages.c.sender_id,
            or_(
                _like(sender.c.email, pattern),
                _like(sender.c.first_name, pattern),
                _like(sender.c.last_name, pattern),
            ),
        ),
        exists(
            select(_recipients.c.id)
            .select_from(_recipients.outerjoin(person, person.c.id == _recipients.c.user_id))
            .where(
                _recipients.c.message_id == _messages.c.id,
                or_(
                    _messages.c.sender_id == caller_id,
                    _recipients.c.kind != RecipientKind.BCC.value,
                ),
                or_(
                    _like(_recipients.c.address, pattern),
                    _like(person.c.email, pattern),
                    _like(person.c.first_name, pattern),
                    _like(person.c.last_name, pattern),
                ),
            )
        ),
    )


def _folder(folder: Folder, *, caller_id: int, now: datetime) -> Select[Any] | None:
    """The folder's (message id, date) rows."""
    m, d = _messages, _deliveries
    if folder is Folder.INBOX:
        return (
            select(m.c.id, d.c.created_at.label("date"))
            .select_from(d.join(m, m.c.id == d.c.message_id))
            .where(
                d.c.user_id == caller_id,
                m.c.status == MessageStatus.SENT.value,
                or_(m.c.expiry_date.is_(None), m.c.expiry_date > now),
            )
        )
    if folder is Folder.SENT:
        return select(m.c.id, m.c.sent_at.label("date")).where(
            m.c.sender_id == caller_id,
            m.c.sent_at.is_not(None),
            m.c.status.in_([MessageStatus.SENT.value, MessageStatus.RECALLED.value]),
        )
    if folder is Folder.DRAFT:
        return select(m.c.id, func.coalesce(m.c.saved_at, m.c.created_at).label("date")).where(
            m.c.sender_id == caller_id, m.c.status == MessageStatus.DRAFT.value
        )
    return None  # Trash


def search_messages(
    session: Session, *, caller: Caller, search: MessageSearch, now: datetime
) -> dict[str, Any]:
    """A page of the caller's messages in `search.folders`, without bodies: the vendor's
    `SearchMessagesPagedResponse` (`pageSize`, `totalPages`, `totalItems`, `currentPage`,
    `results`). A message in several of the folders (sent to oneself) is listed once."""
    parts = [
        part.where(_matches(search.criteria, caller.user_id)) if search.criteria else part
        for folder in sorted(search.folders)
        if (part := _folder(folder, caller_id=caller.user_id, now=now)) is not None
    ]
    if not parts:
        return _page(search, total=0, results=[])
    if len(parts) == 1:
        candidates = parts[0].subquery()
    else:
        both = union_all(*parts).subquery()
        candidates = (
            select(both.c.id, func.max(both.c.date).label("date")).group_by(both.c.id).subquery()
        )
    connection = session.connection()
    total = connection.scalar(select(func.count()).select_from(candidates)) or 0
    order = (candidates.c.date.asc(), candidates.c.id.asc())
    if not search.ascending:
        order = (candidates.c.date.desc(), candidates.c.id.desc())
    ids = list(
        connection.scalars(
            select(candidates.c.id)
            .order_by(*order)
            .offset((search.page - 1) * search.page_size)
            .limit(search.page_size)
        )
    )
    return _page(search, total=total, results=_summaries(session, ids, caller_id=caller.user_id))


def _summaries(session: Session, ids: list[int], *, caller_id: int) -> list[dict[str, Any]]:
    if not ids:
        return []
    messages = {
        m.id: m
        for m in session.scalars(
            select(Message)
            .where(Message.id.in_(ids))
            .options(
                selectinload(Message.recipients).joinedload(Recipient.user),
                joinedload(Message.sender),
                joinedload(Message.parent),
            )
        )
    }
    retrieved = set(
        session.scalars(
            select(Delivery.message_id).where(
                and_(
                    Delivery.user_id == caller_id,
                    Delivery.message_id.in_(ids),
                    Delivery.retrieved_at.is_not(None),
                )
            )
        )
    )
    return [
        message_summary(
            message,
            include_body=False,
            show_bcc=message.sender_id == caller_id,
            retrieved=message.sender_id == caller_id or message.id in retrieved,
        )
        for message in (messages[i] for i in ids)
    ]


def _page(search: MessageSearch, *, total: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pageSize": search.page_size,
        "totalPages": math.ceil(total / search.page_size),
        "totalItems": total,
        "currentPage": search.page,
        "results": results,
    }
