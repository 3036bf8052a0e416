"""Rows written straight into a database, for tests of what reads them in bulk."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.db import Database
from worker.domain import clock
from worker.domain.secrets import Keys
from worker.models import (
    EmailKind,
    EmailStatus,
    Group,
    JobStatus,
    OutboxEmail,
    SendJob,
    User,
    UserState,
    new_guid,
)


def sender(session: Session) -> User:
    group = Group(name=f"group-{new_guid()}")
    session.add(group)
    session.flush()
    user = User(
        email=f"{new_guid()}@example.test",
        password_hash="-",
        first_name="S",
        last_name="S",
        group_id=group.id,
        state=UserState.ACTIVE,
    )
    session.add(user)
    session.flush()
    return user


def job(user_id: int, created_at: datetime, code: str | None) -> SendJob:
    finished = code is not None
    return SendJob(
        id=new_guid(),
        user_id=user_id,
        message_guid=new_guid(),
        status=JobStatus.SUCCEEDED if finished else JobStatus.QUEUED,
        result_code=code,
        created_at=created_at,
        started_at=created_at if finished else None,
        finished_at=created_at if finished else None,
    )


def email(created_at: datetime, status: EmailStatus, attempts: int) -> OutboxEmail:
    return OutboxEmail(
        kind=EmailKind.NOTIFICATION,
        recipient="reader@example.test",
        message_id_header=f"<{new_guid()}@securesend.test>",
        template="notification",
        sealed_content="-",
        status=status,
        attempts=attempts,
        created_at=created_at,
    )


def due_notifications(database: Database, keys: Keys, recipients: list[str]) -> list[int]:
    """One notification per recipient in the outbox, sealed with `keys`, due now, in this
    order (as a burst of sends leaves them); their ids."""
    content = keys.seal(json.dumps({"subject": "Hi", "text": "t", "html": "<p>h</p>"}))
    with database.write_session() as session:
        emails = [
            OutboxEmail(
                kind=EmailKind.NOTIFICATION,
                recipient=recipient,
                message_id_header=f"<{new_guid()}@securesend.test>",
                template="notification",
                sealed_content=content,
                next_attempt_at=clock.now(),
            )
            for recipient in recipients
        ]
        session.add_all(emails)
        session.flush()
        return [email.id for email in emails]


def outbox_rows(database: Database, ids: list[int]) -> dict[int, OutboxEmail]:
    """The outbox rows of `ids` as they are now, detached, by id."""
    with database.read_session() as session:
        rows = session.scalars(select(OutboxEmail).where(OutboxEmail.id.in_(ids))).all()
        session.expunge_all()
        return {row.id: row for row in rows}
