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

from worker.models import IS_PENDING, Lease, MetricTotal, OutboxEmail, WorkerHeartbeat, table

# metric_totals.name of the takeover counters; labels "jobs" and "emails".
TAKEOVERS = "takeovers"

_WORKERS = table(WorkerHeartbeat)


@dataclass(frozen=True, slots=True)
class DeadWorker:
    worker_id: str
    heartbeat_at: datetime
    held: frozenset[str]


def beat(session: Session, *, worker_id: str, held: list[str], now: datetime) -> None:
    """Record that the worker is alive and holds the tasks `held`."""
    updated = (
        session.connection()
        .execute(
            update(WorkerHeartbeat)
            .where(WorkerHeartbeat.id == worker_id)
            .values(heartbeat_at=now, held=held)
        )
        .rowcount
    )
    if not updated:
        session.execute(
            insert(WorkerHeartbeat).values(
                id=worker_id, started_at=now, heartbeat_at=now, held=held
            )
        )


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


def take_back_emails(session: Session, *, worker_ids: list[str]) -> dict[str, list[int]]:
    """Release the claims that `worker_ids` hold on emails not yet delivered, so that
    they can be claimed again now rather than when the claim lapses; their ids by the
    worker that held them."""
    if not worker_ids:
        return {}
    claimed = and_(OutboxEmail.claimed_by.in_(worker_ids), IS_PENDING)
    rows = session.execute(
        select(OutboxEmail.id, OutboxEmail.claimed_by).where(claimed).with_for_update()
    ).all()
    if rows:
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id.in_([email_id for email_id, _ in rows]), claimed)
            .values(claimed_until=None, claimed_by=None)
        )
    by_worker: dict[str, list[int]] = {}
    for email_id, holder in rows:
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
