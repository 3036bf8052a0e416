"""What /metrics reports, read from the database at scrape time.

The database is the record (Flower keeps history in memory only), so these figures are
the same whichever API process is scraped and survive restarts of every process.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.models import EmailStatus, OutboxEmail, SendJob

QUEUE_WAIT_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Snapshot:
    sends_by_code: dict[str, int]
    jobs_queued: int
    queue_wait_seconds: dict[str, float]  # quantile -> seconds, over the recent window
    emails_by_status: dict[str, int]
    email_retries: int
    email_failures: int


def snapshot(session: Session, *, now: datetime) -> Snapshot:
    sends = dict(
        session.execute(
            select(SendJob.result_code, func.count())
            .where(SendJob.result_code.is_not(None))
            .group_by(SendJob.result_code)
        ).all()
    )
    queued = session.scalar(
        select(func.count()).select_from(SendJob).where(SendJob.finished_at.is_(None))
    )
    recent = session.execute(
        select(SendJob.created_at, SendJob.started_at)
        .where(SendJob.started_at >= now - QUEUE_WAIT_WINDOW)
        .order_by(SendJob.started_at.desc())
        .limit(2000)
    ).all()
    waits = sorted(
        max(0.0, (started - created).total_seconds())
        for created, started in recent
        if started is not None
    )
    quantiles = {}
    if waits:
        quantiles = {
            "0.5": statistics.median(waits),
            "0.95": waits[min(len(waits) - 1, int(0.95 * len(waits)))],
            "1.0": waits[-1],
        }
    emails = {
        status.value: count
        for status, count in session.execute(
            select(OutboxEmail.status, func.count()).group_by(OutboxEmail.status)
        ).all()
    }
    retries = session.scalar(
        select(func.coalesce(func.sum(OutboxEmail.attempts - 1), 0)).where(OutboxEmail.attempts > 1)
    )
    return Snapshot(
        sends_by_code={str(code): int(n) for code, n in sends.items()},
        jobs_queued=int(queued or 0),
        queue_wait_seconds=quantiles,
        emails_by_status={s.value: int(emails.get(s.value, 0)) for s in EmailStatus},
        email_retries=int(retries or 0),
        email_failures=int(emails.get(EmailStatus.FAILED.value, 0)),
    )
