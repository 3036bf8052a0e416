"""What /metrics reports, read from the database at scrape time.

The database is the record (Flower keeps history in memory only), so these figures are
the same whichever API process is scraped and survive restarts of every process.

A scrape must not cost more as history grows (it did: a million jobs and a million
emails made one scrape take half a second of the database). So the jobs and emails
created before a checkpoint are counted once, into `metric_totals`, and never read again;
a scrape reads the totals and the rows created since. The checkpoint trails the clock by
`SETTLED_AFTER` and never passes the oldest job or email that is still unfinished, so
everything it folds is final. One exception is accepted: a job whose outcome is recorded
again more than `SETTLED_AFTER` after it was created (a task redelivered that late) keeps
the count of its first outcome.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from worker.domain import recovery
from worker.domain.delivery import PENDING
from worker.models import (
    EmailStatus,
    JobStatus,
    MetricCheckpoint,
    MetricTotal,
    OutboxEmail,
    SendJob,
)

QUEUE_WAIT_WINDOW = timedelta(minutes=5)
SETTLED_AFTER = timedelta(hours=1)
# The checkpoint moves at most this often, so most scrapes write nothing.
FOLD_EVERY = timedelta(minutes=1)
UNFINISHED_JOBS = (JobStatus.QUEUED, JobStatus.RUNNING)
# metric_totals.name
SENDS, EMAILS, EMAIL_RETRIES = "sends", "emails", "email_retries"


@dataclass(frozen=True, slots=True)
class Snapshot:
    sends_by_code: dict[str, int]
    jobs_queued: int
    queue_wait_seconds: dict[str, float]  # quantile -> seconds, over the recent window
    emails_by_status: dict[str, int]
    email_retries: int
    email_failures: int
    takeovers: dict[str, int]  # "jobs" / "emails" taken over from dead workers
    workers_alive: int


_RETRIES = func.sum(case((OutboxEmail.attempts > 1, OutboxEmail.attempts - 1), else_=0))


def _sends_by_code(
    session: Session, start: datetime, end: datetime | None
) -> list[tuple[str, int]]:
    query = select(SendJob.result_code, func.count()).where(
        SendJob.created_at >= start, SendJob.result_code.is_not(None)
    )
    if end is not None:
        query = query.where(SendJob.created_at < end)
    return [(str(code), int(n)) for code, n in session.execute(query.group_by(SendJob.result_code))]


def _emails_by_status(
    session: Session, start: datetime, end: datetime | None
) -> list[tuple[str, int, int]]:
    """(status, emails, attempts beyond the first) of the emails created in [start, end)."""
    query = select(OutboxEmail.status, func.count(), _RETRIES).where(
        OutboxEmail.created_at >= start
    )
    if end is not None:
        query = query.where(OutboxEmail.created_at < end)
    rows = session.execute(query.group_by(OutboxEmail.status))
    return [(str(status), int(n), int(retries or 0)) for status, n, retries in rows]


def _add(session: Session, name: str, label: str, value: int) -> None:
    # Only the checkpoint's holder writes totals: no concurrent insert to guard against.
    added = (
        session.connection()
        .execute(
            update(MetricTotal)
            .where(MetricTotal.name == name, MetricTotal.label == label)
            .values(value=MetricTotal.value + value)
        )
        .rowcount
    )
    if not added:
        session.add(MetricTotal(name=name, label=label, value=value))
        session.flush()


def fold_settled(session: Session, *, now: datetime) -> datetime:
    """Fold the settled rows created since the checkpoint into the totals and move it;
    returns where it stands (rows created before it are counted and may be deleted).
    Takes the checkpoint's row lock: one scrape (or prune) at a time folds."""
    checkpoint = session.scalars(select(MetricCheckpoint).with_for_update()).one()
    oldest_unfinished = [
        session.scalar(
            select(func.min(SendJob.created_at)).where(SendJob.status.in_(UNFINISHED_JOBS))
        ),
        session.scalar(
            select(func.min(OutboxEmail.created_at)).where(OutboxEmail.status.in_(PENDING))
        ),
    ]
    target = min([now - SETTLED_AFTER, *(t for t in oldest_unfinished if t is not None)])
    if target - checkpoint.until < FOLD_EVERY:
        return checkpoint.until
    for code, count in _sends_by_code(session, checkpoint.until, target):
        _add(session, SENDS, code, count)
    for status, count, retries in _emails_by_status(session, checkpoint.until, target):
        _add(session, EMAILS, status, count)
        _add(session, EMAIL_RETRIES, "", retries)
    checkpoint.until = target
    return target


def _merged(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for label, value in pairs:
        merged[label] = merged.get(label, 0) + value
    return merged


def snapshot(session: Session, *, now: datetime, worker_dead_after: timedelta) -> Snapshot:
    """The figures; run it in a write transaction (it may move the checkpoint)."""
    since = fold_settled(session, now=now)
    totals = session.execute(select(MetricTotal.name, MetricTotal.label, MetricTotal.value)).all()
    folded = {
        name: [(label, int(value)) for n, label, value in totals if n == name]
        for name in (SENDS, EMAILS, EMAIL_RETRIES)
    }
    sends = _merged([*folded[SENDS], *_sends_by_code(session, since, None)])
    queued = session.scalar(
        select(func.count()).select_from(SendJob).where(SendJob.status.in_(UNFINISHED_JOBS))
    )
    recent = session.execute(
        select(SendJob.created_at, SendJob.started_at)
        .where(SendJob.created_at >= since, SendJob.started_at >= now - QUEUE_WAIT_WINDOW)
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
    live_emails = _emails_by_status(session, since, None)
    emails = _merged([*folded[EMAILS], *((s, n) for s, n, _ in live_emails)])
    retries = sum(v for _, v in folded[EMAIL_RETRIES]) + sum(r for _, _, r in live_emails)
    return Snapshot(
        sends_by_code=sends,
        jobs_queued=int(queued or 0),
        queue_wait_seconds=quantiles,
        emails_by_status={s.value: emails.get(s.value, 0) for s in EmailStatus},
        email_retries=retries,
        email_failures=emails.get(EmailStatus.FAILED.value, 0),
        takeovers={label: int(v) for n, label, v in totals if n == recovery.TAKEOVERS},
        workers_alive=recovery.workers_alive(session, now=now, dead_after=worker_dead_after),
    )
