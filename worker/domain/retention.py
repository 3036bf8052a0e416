"""Retention: jobs, emails, sessions and authentication tokens older than `RETENTION_DAYS`
are deleted, so the tables stay the size of their retention rather than of the service's
history.

Only jobs and emails that /metrics has already folded into its totals are deleted (see
worker.domain.metrics), so no counter goes down. Deletes run in short batches, each in
its own transaction, within a time budget; what is left waits for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.orm import Session

from worker.db import Database
from worker.domain import recovery
from worker.domain.delivery import PENDING
from worker.domain.metrics import fold_settled
from worker.models import AuthenticationToken, Base, OutboxEmail, SendJob, UserSession, table

PRUNE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Pruned:
    jobs: int = 0
    emails: int = 0
    sessions: int = 0
    tokens: int = 0  # authentication tokens
    workers: int = 0  # heartbeat rows of workers stopped or buried

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.jobs + other.jobs,
            self.emails + other.emails,
            self.sessions + other.sessions,
            self.tokens + other.tokens,
            self.workers + other.workers,
        )


def _delete_some(
    session: Session, model: type[Base], condition: ColumnElement[bool], limit: int
) -> int:
    """Delete up to `limit` rows of `model` that meet `condition`."""
    rows = table(model)
    chosen = select(rows.c.id).where(condition).limit(limit).scalar_subquery()
    return session.connection().execute(delete(rows).where(rows.c.id.in_(chosen))).rowcount


def prune_batch(
    session: Session, *, now: datetime, keep: timedelta, checkpoint: datetime, limit: int
) -> Pruned:
    """Delete up to `limit` each of the jobs and emails created before both `now - keep`
    and the metrics `checkpoint`, of the sessions ended or idle since before `now - keep`,
    and of the authentication tokens expired since then; and the heartbeats of workers
    stopped or buried since then."""
    cutoff = min(now - keep, checkpoint)
    return Pruned(
        jobs=_delete_some(session, SendJob, SendJob.created_at < cutoff, limit),
        emails=_delete_some(
            session,
            OutboxEmail,
            (OutboxEmail.created_at < cutoff) & OutboxEmail.status.not_in(PENDING),
            limit,
        ),
        sessions=_delete_some(
            session,
            UserSession,
            or_(UserSession.ended_at < now - keep, UserSession.last_seen_at < now - keep),
            limit,
        ),
        tokens=_delete_some(
            session, AuthenticationToken, AuthenticationToken.expires_at < now - keep, limit
        ),
        workers=recovery.forget_old_workers(session, before=now - keep),
    )


def prune(
    database: Database,
    *,
    now: Callable[[], datetime],
    keep: timedelta,
    budget_seconds: float,
    limit: int = PRUNE_BATCH,
) -> Pruned:
    """Fold what /metrics has not counted yet, then delete in batches until nothing is
    left to delete or the time budget is spent."""
    checkpoint = database.run(lambda session: fold_settled(session, now=now()))
    total = Pruned()
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        batch = database.run(
            lambda session: prune_batch(
                session, now=now(), keep=keep, checkpoint=checkpoint, limit=limit
            )
        )
        total += batch
        if max(batch.jobs, batch.emails, batch.sessions, batch.tokens) < limit:
            break
    return total
