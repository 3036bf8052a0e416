"""Retention deletes old jobs, emails and sessions, and no /metrics counter goes down."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from tests.support import Stack
from tests.worker import rows
from worker.celery_factory import create_app
from worker.db import Database
from worker.domain import clock, metrics, retention
from worker.models import AuthenticationToken, Base, EmailStatus, OutboxEmail, SendJob, UserSession
from worker.queues import PRUNE_TASK

KEEP = timedelta(days=7)


def _count(database: Database, model: type[Base]) -> int:
    with database.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_prune_deletes_what_is_past_retention_and_keeps_the_counters(
    own_database: Database,
) -> None:
    now = clock.now()
    old, recent = now - timedelta(days=10), now - timedelta(days=1)
    with own_database.write_session() as session:
        user = rows.sender(session)
        session.add_all(
            [
                rows.job(user.id, old, "OK"),
                rows.job(user.id, old, "929"),
                rows.job(user.id, recent, "OK"),
                rows.email(old, EmailStatus.SENT, attempts=2),
                rows.email(recent, EmailStatus.FAILED, attempts=1),
                UserSession(token_hash="a" * 64, user_id=user.id, created_at=old, last_seen_at=old),
                UserSession(
                    token_hash="b" * 64,
                    user_id=user.id,
                    created_at=recent,
                    last_seen_at=recent,
                    ended_at=old,  # logged out long ago
                ),
                UserSession(
                    token_hash="c" * 64, user_id=user.id, created_at=recent, last_seen_at=now
                ),
                AuthenticationToken(
                    token_hash="d" * 64, user_id=user.id, created_at=old, expires_at=old
                ),
                AuthenticationToken(
                    token_hash="e" * 64, user_id=user.id, created_at=old, expires_at=now
                ),
            ]
        )
    with own_database.write_session() as session:
        before = metrics.snapshot(session, now=now, worker_dead_after=timedelta(seconds=15))

    pruned = retention.prune(own_database, now=lambda: now, keep=KEEP, budget_seconds=10, limit=1)

    assert pruned == retention.Pruned(jobs=2, emails=1, sessions=2, tokens=1)
    assert (_count(own_database, SendJob), _count(own_database, OutboxEmail)) == (1, 1)
    assert _count(own_database, UserSession) == _count(own_database, AuthenticationToken) == 1
    with own_database.write_session() as session:
        after = metrics.snapshot(session, now=now, worker_dead_after=timedelta(seconds=15))
    assert after.sends_by_code == before.sends_by_code == {"OK": 2, "929": 1}
    assert after.emails_by_status == before.emails_by_status
    assert after.email_retries == before.email_retries == 1


def test_prune_folds_first_when_metrics_were_never_scraped(own_database: Database) -> None:
    now = clock.now()
    with own_database.write_session() as session:
        user = rows.sender(session)
        session.add(rows.job(user.id, now - timedelta(days=10), "OK"))

    assert retention.prune(own_database, now=lambda: now, keep=KEEP, budget_seconds=10).jobs == 1
    with own_database.write_session() as session:
        assert metrics.snapshot(
            session, now=now, worker_dead_after=timedelta(seconds=15)
        ).sends_by_code == {"OK": 1}


def test_the_prune_task_runs_in_a_live_worker(postgres_stack: Stack, wait_until: Any) -> None:
    def runs() -> int:
        return postgres_stack.log("worker").count("pruned ")

    before = runs()
    create_app(postgres_stack.settings).send_task(PRUNE_TASK)
    assert wait_until(lambda: runs() > before, timeout=20)
