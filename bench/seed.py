"""The benchmark's own data, written straight into its database (fast), then logged in
through HTTP like any client."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from tests.support import Stack
from worker.db import Database
from worker.domain.secrets import hash_password
from worker.models import Group, Message, MessageStatus, Recipient, RecipientKind, User, UserState

SENDERS = 8
PASSWORD = "bench password"


@dataclass
class Seed:
    drafts: list[tuple[str, str]]  # (session token, message guid), round-robin over senders
    big_drafts: list[tuple[str, str]]
    _cursor: int = field(default=0)
    # session token -> the sender's user GUID, for jobs enqueued without HTTP (bench/lanes.py)
    sender_guids: dict[str, str] = field(default_factory=dict)

    def take(self, count: int) -> list[tuple[str, str]]:
        chunk = self.drafts[self._cursor : self._cursor + count]
        assert len(chunk) == count, "the benchmark seeded too few drafts"
        self._cursor += count
        return chunk


@dataclass(frozen=True)
class SeededRows:
    drafts: list[tuple[int, str]]  # (sender id, message guid)
    big_drafts: list[tuple[int, str]]
    sender_emails: dict[int, str]
    sender_guids: dict[int, str]


def seed(stack: Stack, *, drafts: int, big_recipients: int, big_drafts: int = 5) -> Seed:
    """Seed the rows, then log every sender in through HTTP."""
    rows = seed_rows(
        stack.database, drafts=drafts, big_recipients=big_recipients, big_drafts=big_drafts
    )
    tokens = {
        user_id: stack.login(email, PASSWORD) for user_id, email in rows.sender_emails.items()
    }
    return Seed(
        drafts=[(tokens[s], g) for s, g in rows.drafts],
        big_drafts=[(tokens[s], g) for s, g in rows.big_drafts],
        sender_guids={tokens[s]: guid for s, guid in rows.sender_guids.items()},
    )


def seed_rows(
    database: Database, *, drafts: int, big_recipients: int, big_drafts: int = 5
) -> SeededRows:
    """A group, its senders and readers, and drafts to 1 reader (round-robin over the
    senders) and to `big_recipients` readers, written in one transaction."""
    password_hash = hash_password(PASSWORD)
    with database.write_session() as session:
        group = Group(
            name="bench",
            daily_messages=1_000_000,
            daily_invites=1000,
            max_recipients=big_recipients,
            max_expiry_days=30,
            feature_send_to_contacts=True,
            banned_version=0,
        )
        session.add(group)
        session.flush()

        def user(name: str) -> User:
            return User(
                email=f"{name}@bench.example",
                password_hash=password_hash,
                first_name="Bench",
                last_name=name,
                group_id=group.id,
                state=UserState.ACTIVE,
            )

        senders = [user(f"sender{i}") for i in range(SENDERS)]
        readers = [user(f"reader{i}") for i in range(big_recipients)]
        session.add_all(senders + readers)
        session.flush()

        def draft(sender: User, to: list[User]) -> Message:
            return Message(
                sender_id=sender.id,
                status=MessageStatus.DRAFT,
                subject="Quarterly figures",
                body="The body of a secure message. " * 20,
                recipients=[
                    Recipient(kind=RecipientKind.TO, position=i, address=u.email)
                    for i, u in enumerate(to)
                ],
            )

        cycle = itertools.cycle(senders)
        small = [draft(next(cycle), [readers[0]]) for _ in range(drafts)]
        big = [draft(senders[0], readers) for _ in range(big_drafts)]
        session.add_all(small + big)
        session.flush()
        return SeededRows(
            drafts=[(m.sender_id, m.guid) for m in small],
            big_drafts=[(m.sender_id, m.guid) for m in big],
            sender_emails={u.id: u.email for u in senders},
            sender_guids={u.id: u.guid for u in senders},
        )
