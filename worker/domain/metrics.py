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

The queue wait (`WaitHistogram`, per queue and lane) is folded the same way, as cumulative bucket
counts: a send's is the time from its job row's creation (the API queued it) to a worker
starting it, for the jobs that had a row before they ran (one enqueued straight to Celery
has none, so no wait to measure); an email's, from its creation (the send that queued it)
to a worker first claiming it for delivery, the mail batch window included. Neither
changes once recorded, so the counters only grow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from worker.domain import recovery
from worker.domain.delivery import IS_PENDING
from worker.models import (
    EmailStatus,
    JobStatus,
    Lane,
    MetricCheckpoint,
    MetricTotal,
    OutboxEmail,
    SendJob,
)

SETTLED_AFTER = timedelta(hours=1)
# The checkpoint moves at most this often, so most scrapes write nothing.
FOLD_EVERY = timedelta(minutes=1)
UNFINISHED_JOBS = (JobStatus.QUEUED, JobStatus.RUNNING)
# metric_totals.name
SENDS, EMAILS, EMAIL_RETRIES = "sends", "emails", "email_retries"
# The queue-wait histogram's upper bounds in seconds (+Inf besides): from a send that
# starts at once to an email that waits minutes. The alert thresholds (an interactive
# send 2 s: deploy/prometheus/alerts.yml) are bounds, so whether a p95 passes them is
# exact, not interpolated.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# The queues (the histogram's `queue` label); with each lane (its `lane` label) a
# histogram, whose metric_totals.name is `WAIT_TOTALS[(queue, lane)]`. A total's label is
# a bucket's bound (`bucket_label`), "count", or "sum_us" (microseconds).
SEND_WAIT, MAIL_WAIT = "send", "mail"
WAIT_TOTALS = {
    (queue, lane): f"{queue}_wait:{lane.label}" for queue in (SEND_WAIT, MAIL_WAIT) for lane in Lane
}
COUNT, SUM_US = "count", "sum_us"


def bucket_label(bound: float) -> str:
    """A bucket's bound as /metrics prints it in `le` (0.01, 1.0, 300.0)."""
    return repr(float(bound))


@dataclass(frozen=True, slots=True)
class WaitHistogram:
    """Cumulative counts: `buckets` pairs each bound of `WAIT_BUCKETS` with how many
    waits were at most that long; `count` is all of them (the +Inf bucket)."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum_seconds: float

    def __add__(self, other: WaitHistogram) -> WaitHistogram:
        return WaitHistogram(
            buckets=tuple(
                (bound, mine + theirs)
                for (bound, mine), (_, theirs) in zip(self.buckets, other.buckets, strict=True)
            ),
            count=self.count + other.count,
            sum_seconds=self.sum_seconds + other.sum_seconds,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    sends_by_code: dict[str, int]
    jobs_queued: int
    # (SEND_WAIT or MAIL_WAIT, lane) -> since the first row
    queue_wait: dict[tuple[str, Lane], WaitHistogram]
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


def _seconds(session: Session, start: Any, end: Any) -> ColumnElement[Any]:
    """`end - start` in seconds, never below zero (the two clocks may differ a little)."""
    if session.get_bind().dialect.name == "sqlite":
        seconds: ColumnElement[Any] = (func.julianday(end) - func.julianday(start)) * 86400.0
    else:
        seconds = func.extract("epoch", end - start)
    return case((seconds < 0, 0.0), else_=seconds)


def _waits(
    session: Session, queue: str, lane: Lane, start: datetime, end: datetime | None
) -> WaitHistogram:
    """The waits of the `queue` rows of `lane` created in [start, end) whose wait is over."""
    model: type[SendJob] | type[OutboxEmail]
    began: InstrumentedAttribute[datetime | None]
    if queue == SEND_WAIT:
        model, began = SendJob, SendJob.started_at
        known = SendJob.started_at > SendJob.created_at  # it had a row before it ran
    else:
        model, began = OutboxEmail, OutboxEmail.first_claimed_at
        known = OutboxEmail.first_claimed_at.is_not(None)
    wait = _seconds(session, model.created_at, began)
    query = select(
        *(func.sum(case((wait <= bound, 1), else_=0)) for bound in WAIT_BUCKETS),
        func.count(),
        func.sum(wait),
    ).where(model.created_at >= start, model.lane == lane, known)
    if end is not None:
        query = query.where(model.created_at < end)
    *buckets, count, total = session.execute(query).one()
    return WaitHistogram(
        buckets=tuple((bound, int(n or 0)) for bound, n in zip(WAIT_BUCKETS, buckets, strict=True)),
        count=int(count or 0),
        sum_seconds=float(total or 0),
    )


def _folded_waits(totals: dict[str, int]) -> WaitHistogram:
    return WaitHistogram(
        buckets=tuple((b, totals.get(bucket_label(b), 0)) for b in WAIT_BUCKETS),
        count=totals.get(COUNT, 0),
        sum_seconds=totals.get(SUM_US, 0) / 1e6,
    )


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
        session.scalar(select(func.min(OutboxEmail.created_at)).where(IS_PENDING)),
    ]
    target = min([now - SETTLED_AFTER, *(t for t in oldest_unfinished if t is not None)])
    if target - checkpoint.until < FOLD_EVERY:
        return checkpoint.until
    for code, count in _sends_by_code(session, checkpoint.until, target):
        _add(session, SENDS, code, count)
    for status, count, retries in _emails_by_status(session, checkpoint.until, target):
        _add(session, EMAILS, status, count)
        _add(session, EMAIL_RETRIES, "", retries)
    for (queue, lane), name in WAIT_TOTALS.items():
        waits = _waits(session, queue, lane, checkpoint.until, target)
        if waits.count:
            for bound, count in waits.buckets:
                _add(session, name, bucket_label(bound), count)
            _add(session, name, COUNT, waits.count)
            _add(session, name, SUM_US, round(waits.sum_seconds * 1e6))
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
    queue_wait = {
        (queue, lane): _folded_waits({label: int(v) for n, label, v in totals if n == name})
        + _waits(session, queue, lane, since, None)
        for (queue, lane), name in WAIT_TOTALS.items()
    }
    live_emails = _emails_by_status(session, since, None)
    emails = _merged([*folded[EMAILS], *((s, n) for s, n, _ in live_emails)])
    retries = sum(v for _, v in folded[EMAIL_RETRIES]) + sum(r for _, _, r in live_emails)
    return Snapshot(
        sends_by_code=sends,
        jobs_queued=int(queued or 0),
        queue_wait=queue_wait,
        emails_by_status={s.value: emails.get(s.value, 0) for s in EmailStatus},
        email_retries=retries,
        email_failures=emails.get(EmailStatus.FAILED.value, 0),
        takeovers={label: int(v) for n, label, v in totals if n == recovery.TAKEOVERS},
        workers_alive=recovery.workers_alive(session, now=now, dead_after=worker_dead_after),
    )
