"""/metrics folds settled jobs and emails into totals, so a scrape reads only recent rows,
and its counters do not go down when old rows are deleted."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from tests.worker import rows
from worker.db import Database
from worker.domain import clock, metrics
from worker.models import (
    EmailStatus,
    JobStatus,
    MetricCheckpoint,
    OutboxEmail,
    SendJob,
)


def _scrape(database: Database, now: datetime) -> metrics.Snapshot:
    with database.write_session() as session:
        return metrics.snapshot(session, now=now, worker_dead_after=timedelta(seconds=15))


def _figures(snap: metrics.Snapshot) -> tuple[object, ...]:
    return (
        snap.sends_by_code,
        snap.jobs_queued,
        snap.emails_by_status,
        snap.email_retries,
        snap.email_failures,
    )


def test_scrapes_fold_settled_rows_and_survive_their_deletion(own_database: Database) -> None:
    earlier, now = clock.now() - timedelta(seconds=10), clock.now()
    with own_database.write_session() as session:
        user = rows.sender(session)
        session.add_all(
            [
                *(rows.job(user.id, earlier, "OK") for _ in range(3)),
                rows.job(user.id, earlier, "929"),
                rows.job(user.id, now, None),  # unfinished: holds the checkpoint at `now`
                rows.email(earlier, EmailStatus.SENT, attempts=2),
                rows.email(earlier, EmailStatus.FAILED, attempts=3),
                rows.email(now, EmailStatus.QUEUED, attempts=0),
            ]
        )

    first = _scrape(own_database, now)
    assert first.sends_by_code == {"OK": 3, "929": 1}
    assert first.jobs_queued == 1
    assert first.emails_by_status == {"queued": 1, "sent": 1, "retrying": 0, "failed": 1}
    assert (first.email_retries, first.email_failures) == (3, 1)

    # Two hours on, the settled rows are folded; the unfinished ones hold the checkpoint.
    later = now + timedelta(hours=2)
    assert _figures(_scrape(own_database, later)) == _figures(first)
    with own_database.read_session() as session:
        assert session.scalars(select(MetricCheckpoint.until)).one() == now
    with own_database.write_session() as session:
        session.execute(delete(SendJob).where(SendJob.created_at < now))
        session.execute(delete(OutboxEmail).where(OutboxEmail.created_at < now))
    assert _figures(_scrape(own_database, later)) == _figures(first)

    # The held rows finish; once settled they are folded too, and deleting them changes
    # nothing either.
    with own_database.write_session() as session:
        job = session.scalars(select(SendJob).where(SendJob.status == JobStatus.QUEUED)).one()
        job.status, job.result_code, job.finished_at = JobStatus.SUCCEEDED, "OK", later
        email = session.scalars(select(OutboxEmail)).one()
        email.status, email.attempts = EmailStatus.SENT, 1
    final = _scrape(own_database, now + timedelta(hours=3))
    assert final.sends_by_code == {"OK": 4, "929": 1}
    assert final.jobs_queued == 0
    assert final.emails_by_status == {"queued": 0, "sent": 2, "retrying": 0, "failed": 1}
    with own_database.write_session() as session:
        session.execute(delete(SendJob))
        session.execute(delete(OutboxEmail))
    assert _figures(_scrape(own_database, now + timedelta(hours=3))) == _figures(final)
