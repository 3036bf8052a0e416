"""Rows written straight into a database, for tests of what reads them in bulk."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

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
