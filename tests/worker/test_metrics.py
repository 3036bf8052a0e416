"""/metrics folds settled jobs and emails into totals, so a scrape reads only recent rows,
and its counters do not go down when old rows are deleted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from tests.conftest import _create_postgres_database, _drop_postgres_database
from worker.db import Database
from worker.domain import clock, metrics
from worker.migrate import upgrade_to_head
from worker.models import (
    EmailKind,
    EmailStatus,
    Group,
    JobStatus,
    MetricCheckpoint,
    OutboxEmail,
    SendJob,
    User,
    UserState,
    new_guid,
)
from worker.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own: the checkpoint is global, other tests' rows would move it."""
    url = _create_postgres_database() if request.param == "postgres" else ""
    settings = Settings(var_dir=tmp_path, database_url=url)
    upgrade_to_head(settings)
    database = Database(settings.effective_database_url)
    try:
        yield database
    finally:
        database.dispose()
        if url:
            _drop_postgres_database(url)


def _job(user_id: int, created_at: datetime, code: str | None) -> SendJob:
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


def _email(created_at: datetime, status: EmailStatus, attempts: int) -> OutboxEmail:
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


def _scrape(database: Database, now: datetime) -> metrics.Snapshot:
    with database.write_session() as session:
        return metrics.snapshot(session, now=now)


def _figures(snap: metrics.Snapshot) -> tuple[object, ...]:
    return (
        snap.sends_by_code,
        snap.jobs_queued,
        snap.emails_by_status,
        snap.email_retries,
        snap.email_failures,
    )


def test_scrapes_fold_settled_rows_and_survive_their_deletion(database: Database) -> None:
    earlier, now = clock.now() - timedelta(seconds=10), clock.now()
    with database.write_session() as session:
        group = Group(name="metrics")
        session.add(group)
        session.flush()
        user = User(
            email="sender@example.test",
            password_hash="-",
            first_name="S",
            last_name="S",
            group_id=group.id,
            state=UserState.ACTIVE,
        )
        session.add(user)
        session.flush()
        session.add_all(
            [
                *(_job(user.id, earlier, "OK") for _ in range(3)),
                _job(user.id, earlier, "929"),
                _job(user.id, now, None),  # unfinished: holds the checkpoint at `now`
                _email(earlier, EmailStatus.SENT, attempts=2),
                _email(earlier, EmailStatus.FAILED, attempts=3),
                _email(now, EmailStatus.QUEUED, attempts=0),
            ]
        )

    first = _scrape(database, now)
    assert first.sends_by_code == {"OK": 3, "929": 1}
    assert first.jobs_queued == 1
    assert first.emails_by_status == {"queued": 1, "sent": 1, "retrying": 0, "failed": 1}
    assert (first.email_retries, first.email_failures) == (3, 1)

    # Two hours on, the settled rows are folded; the unfinished ones hold the checkpoint.
    later = now + timedelta(hours=2)
    assert _figures(_scrape(database, later)) == _figures(first)
    with database.read_session() as session:
        assert session.scalars(select(MetricCheckpoint.until)).one() == now
    with database.write_session() as session:
        session.execute(delete(SendJob).where(SendJob.created_at < now))
        session.execute(delete(OutboxEmail).where(OutboxEmail.created_at < now))
    assert _figures(_scrape(database, later)) == _figures(first)

    # The held rows finish; once settled they are folded too, and deleting them changes
    # nothing either.
    with database.write_session() as session:
        job = session.scalars(select(SendJob).where(SendJob.status == JobStatus.QUEUED)).one()
        job.status, job.result_code, job.finished_at = JobStatus.SUCCEEDED, "OK", later
        email = session.scalars(select(OutboxEmail)).one()
        email.status, email.attempts = EmailStatus.SENT, 1
    final = _scrape(database, now + timedelta(hours=3))
    assert final.sends_by_code == {"OK": 4, "929": 1}
    assert final.jobs_queued == 0
    assert final.emails_by_status == {"queued": 0, "sent": 2, "retrying": 0, "failed": 1}
    with database.write_session() as session:
        session.execute(delete(SendJob))
        session.execute(delete(OutboxEmail))
    assert _figures(_scrape(database, now + timedelta(hours=3))) == _figures(final)
