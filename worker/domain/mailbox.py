"""The caller's folders, filtered, sorted and paged: SearchMessages and GetInbox (SPEC 4).

One search is the same few statements whatever the mailbox's size: the count and the page
of ids (with text, one statement: the page and a window counting every match), then the
page's messages with their people, and which of them the caller has read. Without text,
each folder is counted and paged from one index (`ix_deliveries_listing`, which carries
recall, expiry and whether one sent it to oneself; `ix_messages_sender_listing` for Sent and
Drafts), and several folders are merged in the indexes' order. Text is matched against
the one column the send wrote (`messages.search_text`): on PostgreSQL through a trigram
index (pg_trgm), so a rare word costs what its matches cost; on SQLite, and for words of
fewer than three characters, message by message, in proportion to the folder.
"""

from __future__ import annotations

import enum
import functools
import math
import operator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select, union_all
from sqlalchemy.orm import Session, joinedload, selectinload

from worker.domain.auth import Caller
from worker.domain.drafts import Person
from worker.domain.messages import MessageView, message_view
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


@dataclass(frozen=True, slots=True)
class MessagePage:
    """One page of a search: `messages` (without bodies), of `total` found."""

    page: int
    page_size: int
    total: int
    messages: tuple[MessageView, ...]

    @property
    def total_pages(self) -> int:
        return math.ceil(self.total / self.page_size)


_messages = table(Message)
_deliveries = table(Delivery)
_recipients = table(Recipient)
_users = table(User)


def searchable_text(
    subject: str, sender: Person, recipients: list[tuple[RecipientKind, str, Person]]
) -> tuple[str, str | None]:
    """What a sent message is found by, case-folded: its subject, sender and To/Cc
    people (addresses and names); and apart, its Bcc people (None without any). Written
    by the send, so a search reads one column per message instead of joining people."""

    def person(address: str, user: Person) -> str:
        return f"{address}\n{user.email}\n{user.first_name}\n{user.last_name}"

    public = [subject, person(sender.email, sender)]
    hidden: list[str] = []
    for kind, address, user in recipients:
        (hidden if kind is RecipientKind.BCC else public).append(person(address, user))
    return "\n".join(public).casefold(), "\n".join(hidden).casefold() if hidden else None


def _escaped(criteria: str) -> str:
    return "%" + criteria.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _ilike(column: Any, pattern: str) -> ColumnElement[bool]:
    return column.ilike(pattern, escape="\\")  # type: ignore[no-any-return]


def _matches_people(criteria: str, caller_id: int) -> ColumnElement[bool]:
    """The slow way, for drafts and for messages sent before the send wrote their search
    text: the subject, the sender's or a recipient's address or name contains
    `criteria` (any case), through the people's rows. Bcc recipients count only for the
    message's sender."""
    pattern = _escaped(criteria)
    sender = _users.alias("sender")
    person = _users.alias("person")
    return or_(
        _ilike(_messages.c.subject, pattern),
        exists().where(
            sender.c.id == _messages.c.sender_id,
            or_(
                _ilike(sender.c.email, pattern),
                _ilike(sender.c.first_name, pattern),
                _ilike(sender.c.last_name, pattern),
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
                    _ilike(_recipients.c.address, pattern),
                    _ilike(person.c.email, pattern),
                    _ilike(person.c.first_name, pattern),
                    _ilike(person.c.last_name, pattern),
                ),
            )
        ),
    )


def _matches(criteria: str, *, caller_id: int, folder: Folder) -> ColumnElement[bool]:
    """The message is found by `criteria`: by the search text its send wrote (the Bcc
    people too in the sender's Sent folder), else the slow way."""
    if folder is Folder.DRAFT:
        return _matches_people(criteria, caller_id)
    folded = _escaped(criteria.casefold())
    by_text: ColumnElement[bool] = _messages.c.search_text.like(folded, escape="\\")
    if folder is Folder.SENT:
        by_text = or_(by_text, _messages.c.search_bcc.like(folded, escape="\\"))
    unwritten = and_(_messages.c.search_text.is_(None), _matches_people(criteria, caller_id))
    return or_(by_text, unwritten)


def _folder(
    folder: Folder, *, caller_id: int, criteria: str, now: datetime, with_sent: bool = False
) -> Select[Any] | None:
    """The folder's (message id, date) rows that `criteria` finds (all without it). The
    Inbox and Sent folders without criteria are read from their index alone. `with_sent`:
    the Sent folder is listed too, so the Inbox leaves out what one sent oneself."""
    m, d = _messages, _deliveries
    if folder is Folder.INBOX:
        rows = select(d.c.message_id.label("id"), d.c.created_at.label("date")).where(
            d.c.user_id == caller_id,
            d.c.recalled == false(),  # "IS FALSE" could not use the index
            or_(d.c.expires_at.is_(None), d.c.expires_at > now),
        )
        if with_sent:
            rows = rows.where(d.c.from_self == false())
        if criteria:
            rows = rows.join(m, m.c.id == d.c.message_id)
    elif folder is Folder.SENT:
        # Only a send sets sent_at; a recalled message keeps it, a recalled draft has none.
        rows = select(m.c.id, m.c.sent_at.label("date")).where(
            m.c.sender_id == caller_id, m.c.sent_at.is_not(None)
        )
    elif folder is Folder.DRAFT:
        rows = select(m.c.id, func.coalesce(m.c.saved_at, m.c.created_at).label("date")).where(
            m.c.sender_id == caller_id,
            m.c.sent_at.is_(None),  # (true of every draft) the Sent folder's index
            m.c.status == MessageStatus.DRAFT.value,
        )
    else:
        return None  # Trash
    if criteria:
        rows = rows.where(_matches(criteria, caller_id=caller_id, folder=folder))
    return rows


def search_messages(
    session: Session, *, caller: Caller, search: MessageSearch, now: datetime
) -> MessagePage:
    """A page of the caller's messages in `search.folders`, without bodies (the vendor's
    `SearchMessagesPagedResponse`). A message in several of the folders (sent to oneself)
    is listed once."""
    with_sent = Folder.SENT in search.folders
    parts = [
        part
        for folder in sorted(search.folders)
        if (
            part := _folder(
                folder,
                caller_id=caller.user_id,
                criteria=search.criteria,
                now=now,
                with_sent=with_sent,
            )
        )
        is not None
    ]
    if not parts:
        return _page(search, total=0, messages=())
    # The folders do not overlap: a draft is in no Inbox, and with the Sent folder the
    # Inbox leaves out what one sent oneself.
    candidates = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()
    connection = session.connection()
    offset = (search.page - 1) * search.page_size
    listed = candidates
    if len(parts) > 1 and not search.criteria:
        # Each folder's first offset + page_size in its index's order, then those merged:
        # a page reads its rows from each index, not every folder whole.
        firsts = [
            part.order_by(*_in_order(part.selected_columns, search.ascending))
            .limit(offset + search.page_size)
            .subquery()
            for part in parts
        ]
        listed = union_all(*(select(first.c.id, first.c.date) for first in firsts)).subquery()
    paged = (
        select(listed.c.id)
        .order_by(*_in_order(listed.c, search.ascending))
        .offset(offset)
        .limit(search.page_size)
    )
    counted = select(func.count()).select_from(candidates)
    if not search.criteria:
        # Reads of an index: each folder's count, and the page in the indexes' order.
        counts = [
            select(func.count()).select_from(part.subquery()).scalar_subquery() for part in parts
        ]
        total = connection.scalar(select(functools.reduce(operator.add, counts))) or 0
        ids = list(connection.scalars(paged))
    else:
        # Text is matched once: the page with a window counting every match.
        page = connection.execute(paged.add_columns(func.count().over().label("total"))).all()
        ids = [row.id for row in page]
        if page:
            total = page[0].total
        elif search.page == 1:
            total = 0
        else:  # past the last page: the count alone
            total = connection.scalar(counted) or 0
    return _page(search, total=total, messages=_views(session, ids, caller_id=caller.user_id))


def _in_order(columns: Any, ascending: bool) -> tuple[ColumnElement[Any], ...]:
    """The listing's order: by date, then id, oldest or newest first."""
    if ascending:
        return (columns.date.asc(), columns.id.asc())
    return (columns.date.desc(), columns.id.desc())


def _views(session: Session, ids: list[int], *, caller_id: int) -> tuple[MessageView, ...]:
    if not ids:
        return ()
    messages = {
        m.id: m
        for m in session.scalars(
            select(Message)
            .where(Message.id.in_(ids))
            .options(
                selectinload(Message.recipients).joinedload(Recipient.user),
                selectinload(Message.attachments),
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
    return tuple(
        message_view(
            message,
            include_body=False,
            show_bcc=message.sender_id == caller_id,
            retrieved=message.sender_id == caller_id or message.id in retrieved,
        )
        for message in (messages[i] for i in ids)
    )


def _page(search: MessageSearch, *, total: int, messages: tuple[MessageView, ...]) -> MessagePage:
    return MessagePage(page=search.page, page_size=search.page_size, total=total, messages=messages)
