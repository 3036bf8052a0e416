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

The outbox holds webhook deliveries too (`Channel.WEBHOOK`): every email figure reads
email rows only. Webhook deliveries are folded by endpoint and status on a checkpoint of
their own (`WEBHOOK_CHECKPOINT`), which the oldest pending delivery holds: an endpoint
that fails for a day holds back that fold alone, not the emails'. A delivery queued again
by a replay after it was folded keeps the count of its first outcome (the backlog, read
from the pending rows, counts it).

A bounce or complaint report may come back after its email was folded (a complaint days
later), and the totals would keep the email as sent: whatever records a report calls
`count_report` in its transaction, which moves the email's count, so that the bounces and
the statuses stay true.

The rest is read as it stands at each scrape, from small tables or indexes: the webhook
backlog (the outbox's partial index of pending rows), the endpoints, the suppression
list's active entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from worker.domain import recovery, suppressions
from worker.models import (
    IS_PENDING,
    Channel,
    EmailStatus,
    JobStatus,
    Lane,
    MetricCheckpoint,
    MetricTotal,
    OutboxEmail,
    ReportKind,
    SendJob,
    Suppression,
    WebhookEndpoint,
)

SETTLED_AFTER = timedelta(hours=1)
# The checkpoint moves at most this often, so most scrapes write nothing.
FOLD_EVERY = timedelta(minutes=1)
UNFINISHED_JOBS = (JobStatus.QUEUED, JobStatus.RUNNING)
# metric_totals.name
SENDS, EMAILS, EMAIL_RETRIES = "sends", "emails", "email_retries"
# Emails a report came back for, by what the latest said (label: hard, soft, complaint).
BOUNCES = "bounces"
BOUNCE_KINDS: tuple[str, ...] = get_args(ReportKind)
# Webhook deliveries: metric_totals.name is `webhook_deliveries:<status>` and the label the
# endpoint's uid (ep_…, up to 40 characters: the label column's width).
WEBHOOK_DELIVERIES = "webhook_deliveries"
# What a webhook delivery can be (never deferred, suppressed or bounced: those are emails').
WEBHOOK_OUTCOMES = (EmailStatus.QUEUED, EmailStatus.RETRYING, EmailStatus.SENT, EmailStatus.FAILED)
# metric_checkpoint.id: the send jobs' and emails' (migration 0006 wrote it), and the webhook
# deliveries' (the first fold after an upgrade writes it).
MAIN_CHECKPOINT, WEBHOOK_CHECKPOINT = 1, 2
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
    # BOUNCE_KINDS -> emails a report came back for, by what the latest report said
    email_bounces: dict[str, int]
    # suppressions.SOURCES -> addresses suppressed now
    suppressions: dict[str, int]
    # (endpoint uid, status) -> deliveries, for the endpoints that exist now
    webhook_deliveries: dict[tuple[str, str], int]
    webhook_backlog: int  # deliveries queued or waiting for a retry
    webhook_endpoints: dict[str, int]  # "enabled" / "disabled"
    takeovers: dict[str, int]  # "jobs" / "emails" taken over from dead workers
    workers_alive: int


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """Up to which creation time the rows are in the totals: send jobs and emails; and
    webhook deliveries."""

    jobs_and_emails: datetime
    webhooks: datetime


_RETRIES = func.sum(case((OutboxEmail.attempts > 1, OutboxEmail.attempts - 1), else_=0))
_IS_EMAIL = OutboxEmail.channel == Channel.EMAIL
_IS_WEBHOOK = OutboxEmail.channel == Channel.WEBHOOK


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
) -> list[tuple[str, str | None, int, int]]:
    """(status, bounce, emails, attempts beyond the first) of the emails created in
    [start, end); webhook deliveries are not emails."""
    query = select(OutboxEmail.status, OutboxEmail.bounce, func.count(), _RETRIES).where(
        OutboxEmail.created_at >= start, _IS_EMAIL
    )
    if end is not None:
        query = query.where(OutboxEmail.created_at < end)
    rows = session.execute(query.group_by(OutboxEmail.status, OutboxEmail.bounce))
    return [(str(status), bounce, int(n), int(retries or 0)) for status, bounce, n, retries in rows]


def _webhook_deliveries(
    session: Session, start: datetime, end: datetime | None
) -> list[tuple[str, str, int]]:
    """(endpoint uid, status, deliveries) of the webhook deliveries created in [start, end).
    A delivery's `recipient` is its endpoint's uid: no join."""
    query = select(OutboxEmail.recipient, OutboxEmail.status, func.count()).where(
        OutboxEmail.created_at >= start, _IS_WEBHOOK
    )
    if end is not None:
        query = query.where(OutboxEmail.created_at < end)
    rows = session.execute(query.group_by(OutboxEmail.recipient, OutboxEmail.status))
    return [(str(uid), str(status), int(n)) for uid, status, n in rows]


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
        known = OutboxEmail.first_claimed_at.is_not(None) & _IS_EMAIL
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
    """Fold the settled rows created since the checkpoints into the totals and move them;
    returns the earlier (the outbox rows of both channels created before it, and the send
    jobs, are counted and may be deleted). Takes the checkpoint's row lock: one scrape (or
    prune) at a time folds."""
    checkpoints = _fold(session, now=now)
    return min(checkpoints.jobs_and_emails, checkpoints.webhooks)


def _fold(session: Session, *, now: datetime) -> Checkpoints:
    checkpoint = _locked_checkpoint(session)
    oldest_unfinished = [
        session.scalar(
            select(func.min(SendJob.created_at)).where(SendJob.status.in_(UNFINISHED_JOBS))
        ),
        session.scalar(select(func.min(OutboxEmail.created_at)).where(IS_PENDING, _IS_EMAIL)),
    ]
    target = min([now - SETTLED_AFTER, *(t for t in oldest_unfinished if t is not None)])
    if target - checkpoint.until >= FOLD_EVERY:
        _fold_jobs_and_emails(session, checkpoint.until, target)
        checkpoint.until = target
    return Checkpoints(
        jobs_and_emails=checkpoint.until,
        webhooks=_fold_webhooks(session, now=now, jobs_and_emails=checkpoint.until),
    )


def _locked_checkpoint(session: Session) -> MetricCheckpoint:
    """The jobs' and emails' checkpoint, locked: whoever holds it is the one writing totals."""
    return session.scalars(
        select(MetricCheckpoint).where(MetricCheckpoint.id == MAIN_CHECKPOINT).with_for_update()
    ).one()


def _fold_jobs_and_emails(session: Session, start: datetime, end: datetime) -> None:
    for code, count in _sends_by_code(session, start, end):
        _add(session, SENDS, code, count)
    for status, bounce, count, retries in _emails_by_status(session, start, end):
        _add(session, EMAILS, status, count)
        _add(session, EMAIL_RETRIES, "", retries)
        if bounce is not None:
            _add(session, BOUNCES, bounce, count)
    for (queue, lane), name in WAIT_TOTALS.items():
        waits = _waits(session, queue, lane, start, end)
        if waits.count:
            for bound, count in waits.buckets:
                _add(session, name, bucket_label(bound), count)
            _add(session, name, COUNT, waits.count)
            _add(session, name, SUM_US, round(waits.sum_seconds * 1e6))


def _fold_webhooks(session: Session, *, now: datetime, jobs_and_emails: datetime) -> datetime:
    """Fold the settled webhook deliveries; returns their checkpoint. Called with the
    jobs' and emails' checkpoint locked, which guards this one too."""
    checkpoint = session.get(MetricCheckpoint, WEBHOOK_CHECKPOINT)
    if checkpoint is None:
        # The first fold since the upgrade that brought webhooks: from the first delivery
        # (the endpoint index finds it), or where the emails stand if there is none yet.
        first = session.scalar(
            select(func.min(OutboxEmail.created_at)).where(OutboxEmail.endpoint_id.is_not(None))
        )
        start = jobs_and_emails if first is None else min(first, jobs_and_emails)
        checkpoint = MetricCheckpoint(id=WEBHOOK_CHECKPOINT, until=start)
        session.add(checkpoint)
        session.flush()
    # Only the deliveries created since the checkpoint hold it: one queued again by a
    # replay was folded already.
    oldest_pending = session.scalar(
        select(func.min(OutboxEmail.created_at)).where(
            IS_PENDING, _IS_WEBHOOK, OutboxEmail.created_at >= checkpoint.until
        )
    )
    target = (
        now - SETTLED_AFTER if oldest_pending is None else min(now - SETTLED_AFTER, oldest_pending)
    )
    if target - checkpoint.until >= FOLD_EVERY:
        for uid, status, count in _webhook_deliveries(session, checkpoint.until, target):
            _add(session, f"{WEBHOOK_DELIVERIES}:{status}", uid, count)
        checkpoint.until = target
    return checkpoint.until


def count_report(session: Session, email: OutboxEmail, *, status: EmailStatus, bounce: str) -> None:
    """Keep the totals true to a bounce or complaint report on `email`: call it in the
    report's transaction, before its status and bounce are set to `status` and `bounce`
    (worker.domain.bounces.record_report). An email folded already keeps, in the totals,
    the status it had then: this moves it. One created since the checkpoint needs
    nothing (a scrape reads it as it is). Takes the checkpoint's lock, so a fold running
    meanwhile is either before it (and folded the email: moved here) or after."""
    checkpoint = _locked_checkpoint(session)
    if email.channel != Channel.EMAIL or email.created_at >= checkpoint.until:
        return
    _add(session, EMAILS, email.status.value, -1)
    _add(session, EMAILS, status.value, 1)
    if email.bounce is not None:
        _add(session, BOUNCES, email.bounce, -1)
    _add(session, BOUNCES, bounce, 1)


def _merged(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for label, value in pairs:
        merged[label] = merged.get(label, 0) + value
    return merged


def _webhook_deliveries_now(
    session: Session, totals: Sequence[tuple[str, str, int]], since: datetime
) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """The deliveries by (endpoint uid, status) of the endpoints that exist now, each
    with every outcome (0 when none); and how many endpoints are enabled and disabled.
    A removed endpoint's folded totals stay in metric_totals but are not shown."""
    prefix = WEBHOOK_DELIVERIES + ":"
    folded = [
        (uid, name.removeprefix(prefix), n) for name, uid, n in totals if name.startswith(prefix)
    ]
    counted: dict[tuple[str, str], int] = {}
    for uid, status, n in [*folded, *_webhook_deliveries(session, since, None)]:
        counted[uid, status] = counted.get((uid, status), 0) + n
    endpoints = {
        str(uid): bool(disabled)
        for uid, disabled in session.execute(
            select(WebhookEndpoint.uid, WebhookEndpoint.disabled_at.is_not(None)).order_by(
                WebhookEndpoint.uid
            )
        )
    }
    deliveries = {(uid, outcome.value): 0 for uid in endpoints for outcome in WEBHOOK_OUTCOMES}
    for (uid, status), n in sorted(counted.items()):
        if uid in endpoints:
            deliveries[uid, status] = n
    disabled = sum(endpoints.values())
    return deliveries, {"enabled": len(endpoints) - disabled, "disabled": disabled}


def _active_suppressions(session: Session, now: datetime) -> dict[str, int]:
    """Addresses suppressed now by source; the list holds one row per suppression ever
    made (removals and expiries are recorded, not deleted), far fewer than emails."""
    rows = session.execute(
        select(Suppression.source, func.count())
        .where(suppressions._active(now))
        .group_by(Suppression.source)
    )
    found = {str(source): int(n) for source, n in rows}
    return {source: found.pop(source, 0) for source in suppressions.SOURCES} | found


def snapshot(session: Session, *, now: datetime, worker_dead_after: timedelta) -> Snapshot:
    """The figures; run it in a write transaction (it may move the checkpoints)."""
    since = _fold(session, now=now)
    totals = [
        (name, label, int(value))
        for name, label, value in session.execute(
            select(MetricTotal.name, MetricTotal.label, MetricTotal.value)
        )
    ]
    folded = {
        name: [(label, value) for n, label, value in totals if n == name]
        for name in (SENDS, EMAILS, EMAIL_RETRIES, BOUNCES)
    }
    sends = _merged([*folded[SENDS], *_sends_by_code(session, since.jobs_and_emails, None)])
    queued = session.scalar(
        select(func.count()).select_from(SendJob).where(SendJob.status.in_(UNFINISHED_JOBS))
    )
    queue_wait = {
        (queue, lane): _folded_waits({label: v for n, label, v in totals if n == name})
        + _waits(session, queue, lane, since.jobs_and_emails, None)
        for (queue, lane), name in WAIT_TOTALS.items()
    }
    live_emails = _emails_by_status(session, since.jobs_and_emails, None)
    emails = _merged([*folded[EMAILS], *((s, n) for s, _, n, _ in live_emails)])
    retries = sum(v for _, v in folded[EMAIL_RETRIES]) + sum(r for *_, r in live_emails)
    bounces = _merged([*folded[BOUNCES], *((b, n) for _, b, n, _ in live_emails if b is not None)])
    deliveries, endpoints = _webhook_deliveries_now(session, totals, since.webhooks)
    # Pending rows wherever they were created (a replay queues old ones again): the
    # outbox's partial index of pending rows, which leads with the channel.
    backlog = session.scalar(
        select(func.count()).select_from(OutboxEmail).where(IS_PENDING, _IS_WEBHOOK)
    )
    return Snapshot(
        sends_by_code=sends,
        jobs_queued=int(queued or 0),
        queue_wait=queue_wait,
        emails_by_status={s.value: emails.get(s.value, 0) for s in EmailStatus},
        email_retries=retries,
        email_failures=emails.get(EmailStatus.FAILED.value, 0),
        email_bounces={kind: bounces.get(kind, 0) for kind in BOUNCE_KINDS},
        suppressions=_active_suppressions(session, now),
        webhook_deliveries=deliveries,
        webhook_backlog=int(backlog or 0),
        webhook_endpoints=endpoints,
        takeovers={label: v for n, label, v in totals if n == recovery.TAKEOVERS},
        workers_alive=recovery.workers_alive(session, now=now, dead_after=worker_dead_after),
    )
