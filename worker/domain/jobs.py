"""Send jobs as the HTTP side sees them (SPEC 4.1): open one, read its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    CTE,
    Connection,
    Select,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from worker.db import WITHOUT_WAITING_FOR_DISK
from worker.domain import errors
from worker.domain.auth import (
    LIVE_SESSION,
    Caller,
    SessionKey,
    caller_of,
    find_caller,
    live_session_params,
)
from worker.domain.errors import ApiError
from worker.models import JobStatus, Lane, SendJob, table


@cache
def _insert_job(dialect: str) -> ReturningInsert[tuple[bool]]:
    """The job row's insert, built once per dialect (it is on every send's path). A row
    already there is left alone: `Database.run_alone` runs it again when the connection
    died, and the first run may have committed. Its RETURNING clause lets it commit
    without waiting for the disk (worker.db.WITHOUT_WAITING_FOR_DISK)."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(table(SendJob))
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(WITHOUT_WAITING_FOR_DISK)
    )


@dataclass(frozen=True, slots=True)
class JobView:
    job_id: str
    status: JobStatus
    http_status: int | None
    response: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)


def open_send_job(
    connection: Connection,
    *,
    caller: Caller,
    job_id: str,
    message_guid: str,
    payload: dict[str, Any],
    lane: Lane,
    now: datetime,
) -> None:
    """Record a queued job for the caller in its lane, with the payload about to be
    published (kept as it is, to publish it again if the broker loses it); the worker
    fills in its outcome. One statement, committed on its own (`Database.run_alone`).

    Its commit does not wait for the disk: should the database server crash and lose
    it, the send's own transaction records the job when it finds none (the task is on
    its way either way), so the caller is not kept waiting for the flush."""
    connection.execute(
        _insert_job(connection.dialect.name),
        {
            "id": job_id,
            "user_id": caller.user_id,
            "message_guid": message_guid,
            "status": JobStatus.QUEUED,
            "created_at": now,
            "payload": payload,
            "attempts": 1,
            "published_at": now,
            "lane": lane,
        },
    ).all()


# The payload's key for the sender (worker.payloads.SendJobV1.sender_guid), which
# `open_send_job_as` writes from the session it finds.
SENDER_KEY = "senderGuid"


def open_send_job_as(
    connection: Connection,
    *,
    session: SessionKey,
    job_id: str,
    message_guid: str,
    payload: dict[str, Any],
    lane: Lane,
    now: datetime,
) -> Caller:
    """Rule 1 and `open_send_job` together: the caller of `session` (ApiError 811, as
    `auth.find_caller`), and its queued job, whose payload gets the caller's guid as
    `SENDER_KEY`. On PostgreSQL one statement, committed on its own without waiting for
    the disk (a round trip, where a read and then the insert took two): the insert reads
    the session the statement found, so a bad session queues nothing. Elsewhere, the read
    and then the insert."""
    if connection.dialect.name != "postgresql":
        caller = find_caller(connection, session)
        open_send_job(
            connection,
            caller=caller,
            job_id=job_id,
            message_guid=message_guid,
            payload={**payload, SENDER_KEY: caller.user_guid},
            lane=lane,
            now=now,
        )
        return caller
    row = connection.execute(
        _open_job_as_caller(),
        {
            **live_session_params(session),
            "id": job_id,
            "message_guid": message_guid,
            "created_at": now,
            "payload": payload,
            "published_at": now,
            "lane": int(lane),
        },
    ).one_or_none()
    return caller_of(None if row is None else row[:4], now=session.now)


@cache
def _open_job_as_caller() -> Select[tuple[int, Any, int, str, bool]]:
    """`open_send_job_as`'s statement on PostgreSQL, built once: the live session as a CTE,
    the job inserted from it (a row already there left alone, as `_insert_job` does), the
    session's columns answered."""
    caller: CTE = LIVE_SESSION.cte("caller")
    jobs_table = table(SendJob)
    payload = func.jsonb_set(
        cast(bindparam("payload", type_=jobs_table.c.payload.type), JSONB),
        literal_column(f"'{{{SENDER_KEY}}}'::text[]"),
        func.to_jsonb(caller.c.user_guid),
    )
    job = (
        pg_insert(jobs_table)
        .from_select(
            ["id", "user_id", "message_guid", "status", "created_at", "payload", "attempts"]
            + ["published_at", "lane"],
            select(
                bindparam("id", type_=jobs_table.c.id.type),
                caller.c.user_id,
                bindparam("message_guid", type_=jobs_table.c.message_guid.type),
                literal(JobStatus.QUEUED, jobs_table.c.status.type),
                bindparam("created_at", type_=jobs_table.c.created_at.type),
                cast(payload, jobs_table.c.payload.type),
                literal(1),
                bindparam("published_at", type_=jobs_table.c.published_at.type),
                bindparam("lane", type_=jobs_table.c.lane.type),
            ),
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .cte("job")
    )
    return select(
        caller.c.session_id,
        caller.c.last_seen_at,
        caller.c.user_id,
        caller.c.user_guid,
        WITHOUT_WAITING_FOR_DISK,
    ).add_cte(job)


def count_attempt(session: Session, *, job_id: str) -> int:
    """Count one more delivery of a job (a redelivery after a lost worker); returns the
    attempts so far, or 1 for a job that has no row (enqueued without HTTP)."""
    session.execute(
        update(SendJob).where(SendJob.id == job_id).values(attempts=SendJob.attempts + 1)
    )
    attempts = session.scalar(select(SendJob.attempts).where(SendJob.id == job_id))
    return attempts or 1


@dataclass(frozen=True, slots=True)
class LostJobs:
    republish: list[dict[str, Any]]  # payloads to publish again
    given_up: list[str]  # job ids failed with 503 after too many attempts


def stale_job_ids(
    session: Session, *, now: datetime, older_than: timedelta, limit: int = 200
) -> list[str]:
    """Jobs still queued `older_than` after they were last published, oldest first: each
    is waiting in the broker behind others, held by a worker, or lost (a Redis restart
    without persistence, a publish that failed, a dead worker's)."""
    return list(
        session.scalars(
            select(SendJob.id)
            .where(
                SendJob.status == JobStatus.QUEUED,
                SendJob.published_at < now - older_than,
                SendJob.payload.is_not(None),
            )
            .order_by(SendJob.published_at)
            .limit(limit)
        )
    )


def take_lost_jobs(
    session: Session,
    *,
    job_ids: list[str],
    now: datetime,
    older_than: timedelta,
    max_attempts: int,
    give_up_body: dict[str, Any],
) -> LostJobs:
    """Of `job_ids` (lost: nobody holds them), those still queued are counted as another
    attempt and returned for publishing again; past `max_attempts` each fails with
    `give_up_body` (503) instead. Publishing a job twice is harmless: a send is
    idempotent."""
    jobs = session.scalars(
        select(SendJob)
        .where(
            SendJob.id.in_(job_ids),
            SendJob.status == JobStatus.QUEUED,
            SendJob.published_at < now - older_than,
        )
        .order_by(SendJob.published_at)
        .with_for_update(skip_locked=True)
    ).all()
    republish: list[dict[str, Any]] = []
    given_up: list[str] = []
    for job in jobs:
        if job.attempts >= max_attempts:
            job.status, job.http_status, job.response = JobStatus.FAILED, 503, give_up_body
            job.finished_at = now
            given_up.append(job.id)
        else:
            job.attempts += 1
            job.published_at = now
            assert job.payload is not None
            republish.append(job.payload)
    return LostJobs(republish=republish, given_up=given_up)


def _view(job: SendJob) -> JobView:
    return JobView(
        job_id=job.id, status=job.status, http_status=job.http_status, response=job.response
    )


def find_job(session: Session, job_id: str) -> JobView | None:
    job = session.get(SendJob, job_id)
    return _view(job) if job is not None else None


def get_own_job(session: Session, *, caller: Caller, job_id: str) -> JobView:
    """The caller's job; another user's job answers 404 like a missing one."""
    job = session.scalars(
        select(SendJob).where(SendJob.id == job_id, SendJob.user_id == caller.user_id)
    ).one_or_none()
    if job is None:
        raise ApiError(errors.JOB_NOT_FOUND)
    return _view(job)
