"""Retention: jobs, emails, sessions and authentication tokens older than `RETENTION_DAYS`
are deleted, so the tables stay the size of their retention rather than of the service's
history; and drafts nobody has worked on for `DRAFT_RETENTION_DAYS`, with their files.
A sent message, and its files, are kept.

Only jobs and emails that /metrics has already folded into its totals are deleted (see
worker.domain.metrics), so no counter goes down. Deletes run in short batches, each in
its own transaction, within a time budget; what is left waits for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from worker.db import Database
from worker.domain import recovery
from worker.domain.attachments import ChunkStore, forget_attachments_of
from worker.domain.delivery import PENDING
from worker.domain.metrics import fold_settled
from worker.models import (
    Attachment,
    AuthenticationToken,
    Base,
    Message,
    MessageStatus,
    OutboxEmail,
    SendJob,
    UserSession,
    table,
)

PRUNE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Pruned:
    jobs: int = 0
    emails: int = 0
    sessions: int = 0
    tokens: int = 0  # authentication tokens
    workers: int = 0  # heartbeat rows of workers stopped or buried
    drafts: int = 0
    attachments: int = 0  # the drafts' files

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.jobs + other.jobs,
            self.emails + other.emails,
            self.sessions + other.sessions,
            self.tokens + other.tokens,
            self.workers + other.workers,
            self.drafts + other.drafts,
            self.attachments + other.attachments,
        )

    @property
    def most(self) -> int:
        """The largest count of one batch: below the batch size, nothing is left."""
        return max(self.jobs, self.emails, self.sessions, self.tokens, self.drafts)


def _delete_some(
    session: Session, model: type[Base], condition: ColumnElement[bool], limit: int
) -> int:
    """Delete up to `limit` rows of `model` that meet `condition`."""
    rows = table(model)
    chosen = select(rows.c.id).where(condition).limit(limit).scalar_subquery()
    return session.connection().execute(delete(rows).where(rows.c.id.in_(chosen))).rowcount


_CHILD = aliased(Message)


def _prune_drafts(
    session: Session, *, before: datetime, limit: int, store: ChunkStore
) -> tuple[int, int]:
    """Delete up to `limit` drafts last saved (or created) before `before` whose files
    were all pre-created before it too, and that no reply or forward names as its
    parent; their files with them. Answers (drafts, files) deleted."""
    last_file = (
        select(func.max(Attachment.created_at))
        .where(Attachment.message_id == Message.id)
        .scalar_subquery()
    )
    stale = list(
        session.scalars(
            select(Message.id)
            .where(
                Message.status == MessageStatus.DRAFT,
                func.coalesce(Message.saved_at, Message.created_at) < before,
                or_(last_file.is_(None), last_file < before),
                ~exists().where(_CHILD.parent_id == Message.id),
            )
            .limit(limit)
        )
    )
    if not stale:
        return 0, 0
    files = forget_attachments_of(session, stale, store)
    session.execute(delete(Message).where(Message.id.in_(stale)))
    return len(stale), files


def prune_batch(
    session: Session,
    *,
    now: datetime,
    keep: timedelta,
    checkpoint: datetime,
    limit: int,
    keep_drafts: timedelta | None = None,
    store: ChunkStore | None = None,
) -> Pruned:
    """Delete up to `limit` each of the jobs and emails created before both `now - keep`
    and the metrics `checkpoint`, of the sessions ended or idle since before `now - keep`,
    and of the authentication tokens expired since then; the heartbeats of workers
    stopped or buried since then; and, with `keep_drafts` (and the `store` their files
    are in), of the drafts untouched since before `now - keep_drafts`."""
    cutoff = min(now - keep, checkpoint)
    drafts, files = (
        _prune_drafts(session, before=now - keep_drafts, limit=limit, store=store)
        if keep_drafts is not None and store is not None
        else (0, 0)
    )
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
        drafts=drafts,
        attachments=files,
    )


def prune(
    database: Database,
    *,
    now: Callable[[], datetime],
    keep: timedelta,
    budget_seconds: float,
    limit: int = PRUNE_BATCH,
    keep_drafts: timedelta | None = None,
    store: ChunkStore | None = None,
) -> Pruned:
    """Fold what /metrics has not counted yet, then delete in batches until nothing is
    left to delete or the time budget is spent."""
    checkpoint = database.run(lambda session: fold_settled(session, now=now()))
    total = Pruned()
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        batch = database.run(
            lambda session: prune_batch(
                session,
                now=now(),
                keep=keep,
                checkpoint=checkpoint,
                limit=limit,
                keep_drafts=keep_drafts,
                store=store,
            )
        )
        total += batch
        if batch.most < limit:
            break
    return total
