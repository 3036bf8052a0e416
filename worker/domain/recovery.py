"""Who is alive, and taking back what a dead worker held (docs/reliability.md).

Every worker writes a heartbeat every few seconds with the ids of the tasks it holds;
one whose heartbeat is older than `dead_after` (and that did not stop cleanly) is dead.
Any live worker may then take back what it held, under a lease that one holds at a time
(`take_lease`): its email claims here, its broker messages in worker.lifeline. Each step
is also safe without the lease: a claim is released only while the dead worker still
holds it, and a dead worker is buried once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from worker.models import (
    IS_PENDING,
    EmailStatus,
    Lease,
    MetricTotal,
    OutboxEmail,
    WorkerHeartbeat,
    table,
)

# metric_totals.name of the takeover counters; labels "jobs" and "emails".
TAKEOVERS = "takeovers"

_WORKERS = table(WorkerHeartbeat)


@dataclass(frozen=True, slots=True)
class DeadWorker:
    worker_id: str
    heartbeat_at: datetime
    held: frozenset[str]


def beat(session: Session, *, worker_id: str, held: list[str], now: datetime) -> datetime | None:
    """Record that the worker is alive and holds the tasks `held`. Returns when it was
    buried, if the others took it for dead meanwhile (it was frozen or cut off): it is
    alive again from now on, and what they took over is theirs."""
    beating = update(WorkerHeartbeat).values(heartbeat_at=now, held=held)
    connection = session.connection()
    alive = WorkerHeartbeat.id == worker_id, WorkerHeartbeat.buried_at.is_(None)
    if connection.execute(beating.where(*alive)).rowcount:
        return None
    buried = session.scalar(
        select(WorkerHeartbeat.buried_at).where(WorkerHeartbeat.id == worker_id)
    )
    if buried is not None:
        connection.execute(beating.where(WorkerHeartbeat.id == worker_id).values(buried_at=None))
        return buried
    session.execute(
        insert(WorkerHeartbeat).values(id=worker_id, started_at=now, heartbeat_at=now, held=held)
    )
    return None


def stop(session: Session, *, worker_id: str, now: datetime) -> None:
    """A clean stop: the worker gave back what it held, nobody needs to take it over."""
    session.execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.id == worker_id)
        .values(stopped_at=now, held=[])
    )


# The leases (their rows are created by migration 0009): who sweeps now, and who ran the
# hourly retention last.
SWEEP_LEASE, PRUNE_LEASE = "sweep", "prune"


def take_lease(
    session: Session,
    *,
    name: str,
    holder: str,
    now: datetime,
    ttl: timedelta,
    renew: bool = True,
) -> bool:
    """Take the lease `name` for `ttl` if it expired, or renew it if `holder` has it (and
    `renew`); False while another holder has it."""
    free = Lease.expires_at < now
    taken = session.connection().execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, free) if renew else free)
        .values(holder=holder, expires_at=now + ttl)
    )
    return bool(taken.rowcount)


@dataclass(frozen=True, slots=True)
class LiveHoldings:
    held: set[str]  # the ids of every task a live worker holds
    # The oldest of their last heartbeats (None: no live worker). A message delivered
    # before it, and held by none of them, was not received by any of them.
    since: datetime | None


def live_holdings(session: Session, *, now: datetime, dead_after: timedelta) -> LiveHoldings:
    """What the live workers hold, as of their last heartbeats."""
    rows = session.execute(
        select(WorkerHeartbeat.held, WorkerHeartbeat.heartbeat_at).where(
            WorkerHeartbeat.heartbeat_at >= now - dead_after,
            WorkerHeartbeat.stopped_at.is_(None),
        )
    ).all()
    return LiveHoldings(
        held={task_id for held, _ in rows for task_id in held or ()},
        since=min((at for _, at in rows), default=None),
    )


def dead_workers(session: Session, *, now: datetime, dead_after: timedelta) -> list[DeadWorker]:
    """Workers that stopped beating without stopping cleanly, not yet taken over."""
    rows = session.execute(
        select(WorkerHeartbeat.id, WorkerHeartbeat.heartbeat_at, WorkerHeartbeat.held).where(
            WorkerHeartbeat.heartbeat_at < now - dead_after,
            WorkerHeartbeat.stopped_at.is_(None),
            WorkerHeartbeat.buried_at.is_(None),
        )
    ).all()
    return [DeadWorker(w, at, frozenset(held or ())) for w, at, held in rows]


# What the record of an email says when the worker that handed it to the relay was lost
# before it recorded the reply (here, or by the claim once a lease lapsed).
TAKEN_AS_SENT = "handed to the relay by a worker lost before it recorded the reply; taken as sent"


def take_back_emails(
    session: Session, *, worker_ids: list[str], now: datetime
) -> dict[str, list[int]]:
    """Release the claims that `worker_ids` hold on emails not yet delivered, so that
    they can be claimed again now rather than when the claim lapses; their ids by the
    worker that held them. An email one of them had handed to the relay (worker.domain.
    delivery's hand-over: its data's final dot about to go) is taken as sent instead: it
    is most likely at the relay, and sending it again would double it."""
    if not worker_ids:
        return {}
    held = and_(OutboxEmail.claimed_by.in_(worker_ids), IS_PENDING)
    rows = session.execute(
        select(OutboxEmail.id, OutboxEmail.claimed_by, OutboxEmail.handed_at)
        .where(held)
        .with_for_update()
    ).all()
    handed = [email_id for email_id, _, handed_at in rows if handed_at is not None]
    released = [email_id for email_id, _, handed_at in rows if handed_at is None]
    if released:
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id.in_(released), held)
            .values(claimed_until=None, claimed_by=None, updated_at=now)
        )
    if handed:
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id.in_(handed), held)
            .values(
                status=EmailStatus.SENT,
                sent_at=OutboxEmail.handed_at,
                last_error=TAKEN_AS_SENT,
                claimed_until=None,
                claimed_by=None,
                handed_at=None,
                updated_at=now,
            )
        )
    by_worker: dict[str, list[int]] = {}
    for email_id, holder, _ in rows:
        by_worker.setdefault(str(holder), []).append(email_id)
    return by_worker


def bury(session: Session, *, worker_ids: list[str], now: datetime) -> list[str]:
    """Mark dead workers as taken over; returns those this call buried (each is buried
    once, whoever else tries)."""
    buried = []
    for worker_id in worker_ids:
        done = (
            session.connection()
            .execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.id == worker_id, WorkerHeartbeat.buried_at.is_(None))
                .values(buried_at=now)
            )
            .rowcount
        )
        if done:
            buried.append(worker_id)
    return buried


def count_takeovers(session: Session, *, jobs: int, emails: int) -> None:
    """Add to the takeover counters /metrics reports (rows created by migration 0009)."""
    for label, value in (("jobs", jobs), ("emails", emails)):
        if value:
            session.execute(
                update(MetricTotal)
                .where(MetricTotal.name == TAKEOVERS, MetricTotal.label == label)
                .values(value=MetricTotal.value + value)
            )


def workers_alive(session: Session, *, now: datetime, dead_after: timedelta) -> int:
    alive = session.scalar(
        select(func.count()).where(
            WorkerHeartbeat.heartbeat_at >= now - dead_after,
            WorkerHeartbeat.stopped_at.is_(None),
        )
    )
    return int(alive or 0)


def forget_old_workers(session: Session, *, before: datetime) -> int:
    """Delete the rows of workers stopped or buried before `before` (retention)."""
    return (
        session.connection()
        .execute(
            _WORKERS.delete().where(
                or_(_WORKERS.c.stopped_at < before, _WORKERS.c.buried_at < before)
            )
        )
        .rowcount
    )
