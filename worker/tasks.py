"""Celery tasks: thin wrappers that decode a payload, open one transaction and call the
domain. No SQL, SMTP or Jinja here. docs/reliability.md says what each guarantees."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Task
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from worker import broker
from worker.celery_app import app
from worker.db import get_database
from worker.domain import clock, jobs, outbox, recovery, retention
from worker.domain.errors import SEND_FAILED, ApiError
from worker.domain.send import SendOutcome, record_job_outcome, send_message
from worker.identity import worker_id
from worker.mailer import (
    hold_drain,
    kick_delivery,
    mail_transport,
    queue_delivery,
    release_drain,
)
from worker.payloads import DeliverEmailsV1, SendJobV1, SendResult, SendSecrets, payload_error
from worker.queues import (
    DELIVER_TASK,
    DRAIN_TASK,
    JOBS_SWEEP_TASK,
    PING_TASK,
    PRUNE_TASK,
    SEND_QUEUE,
    SEND_TASK,
    SWEEP_TASK,
)
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_settings = get_settings()


def _result(outcome: SendOutcome) -> dict[str, Any]:
    return SendResult(http_status=outcome.http_status, response=outcome.body).model_dump(
        by_alias=True
    )


class _SendTask(Task):  # type: ignore[misc]
    """Queues delivery of a send's emails only after its result is stored (and so on its
    way to the waiting API), keeping that Redis round trip out of the answer's path."""

    # Flower (the task-succeeded event) shows a result as its repr cut at this many
    # characters: the HTTP status, never the notification, which quotes the subject.
    resultrepr_maxsize = len("{'httpStatus': 200, ")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        if getattr(self.request, "emails_queued", False):
            kick_delivery(app, get_settings())


# While the database cannot be reached a send is tried again after these many seconds,
# about a minute in all; then the job is left queued, and the jobs sweep publishes it
# again once the database is back. It is never failed for an outage: its caller may
# have been told 202, and a 503 must mean "not sent" (SPEC 2).
DATABASE_RETRY_COUNTDOWNS = (1, 2, 4, 8, 15, 15, 15)
DATABASE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)


@app.task(name=SEND_TASK, bind=True, acks_late=True, base=_SendTask)
def send_message_task(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one SendMessage job; returns `SendResult` as JSON (httpStatus, response)."""
    try:
        run = run_send_job(
            payload,
            settings=get_settings(),
            redelivered=bool(self.request.delivery_info.get("redelivered")),
        )
    except DATABASE_ERRORS as e:
        # Nothing was committed (or the send was, and rule 4 answers it): safe to retry.
        retries = self.request.retries
        if retries >= len(DATABASE_RETRY_COUNTDOWNS):
            logger.warning("send job %s: database still unavailable; left queued", self.request.id)
            raise
        logger.warning("send job %s: database unavailable, retrying", self.request.id)
        raise self.retry(
            exc=e,
            countdown=DATABASE_RETRY_COUNTDOWNS[retries],
            max_retries=len(DATABASE_RETRY_COUNTDOWNS),
        ) from e
    self.request.emails_queued = run.emails_queued
    return run.result


@dataclass(frozen=True, slots=True)
class SendJobRun:
    result: dict[str, Any]  # SendResult as JSON
    emails_queued: bool  # committed emails wait in the outbox: delivery must be kicked


def run_send_job(payload: dict[str, Any], *, settings: Settings, redelivered: bool) -> SendJobRun:
    """What the send task does, callable without Celery (the profiler calls it): decode,
    send in one transaction, log and answer. A database that cannot be reached raises
    (the caller retries); any other failure answers 503 and records it."""
    try:
        job = SendJobV1.model_validate(payload)
    except ValidationError as e:
        # Only direct enqueuers can send a bad payload; they get the shape HTTP callers get.
        body = SendResult(http_status=400, response=payload_error(e)).model_dump(by_alias=True)
        return SendJobRun(result=body, emails_queued=False)
    database = get_database(settings)
    if redelivered:
        # The worker that had it died (or shut down) mid-task: count it, and stop a job
        # that keeps killing its workers.
        attempts = database.run(lambda session: jobs.count_attempt(session, job_id=job.job_id))
        if attempts > settings.max_send_attempts:
            outcome = _give_up(job, f"redelivered {attempts} times")
            return SendJobRun(result=_result(outcome), emails_queued=False)
    try:
        secrets = SendSecrets.unsealed(job.sealed_secrets)
        # Safe to run twice (`Database.run`): a second run answers rule 4's stored response.
        outcome = database.run(
            lambda session: send_message(
                session, job=job, secrets=secrets, now=clock.now(), settings=settings
            )
        )
    except DATABASE_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 - the caller must always get an answer
        outcome = _give_up(job, type(e).__name__, error=e)
    logger.info(
        "send job %s answered %s %s",
        job.job_id,
        outcome.http_status,
        outcome.result_code,
        extra={
            "job_id": job.job_id,
            "message_guid": job.message_guid,
            "code": outcome.result_code,
            "http_status": outcome.http_status,
        },
    )
    return SendJobRun(result=_result(outcome), emails_queued=bool(outcome.email_ids))


def _give_up(job: SendJobV1, reason: str, *, error: Exception | None = None) -> SendOutcome:
    logger.error("send job %s failed: %s", job.job_id, reason, exc_info=error)
    outcome = SendOutcome.from_error(ApiError(SEND_FAILED))
    get_database().run(
        lambda session: record_job_outcome(session, job=job, outcome=outcome, now=clock.now())
    )
    return outcome


@app.task(name=JOBS_SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_jobs_task() -> int:
    """Publish again the jobs whose broker message was lost: queued for a while, and
    neither waiting in the send queue, nor delivered to a worker, nor held by a live
    one. Returns how many."""
    settings = get_settings()
    database = get_database(settings)
    older_than = timedelta(seconds=settings.job_republish_after_seconds)
    dead_after = timedelta(seconds=settings.worker_dead_after_seconds)
    now = clock.now()
    stale, live = database.run(
        lambda session: (
            jobs.stale_job_ids(session, now=now, older_than=older_than),
            recovery.live_holdings(session, now=now, dead_after=dead_after),
        ),
        write=False,
    )
    held = live.held | {d.task_id for d in broker.delivered(app)}
    held |= broker.waiting(app, settings, SEND_QUEUE, set(stale) - held)
    lost = [job_id for job_id in stale if job_id not in held]
    if not lost:
        return 0
    found = database.run(
        lambda session: jobs.take_lost_jobs(
            session,
            job_ids=lost,
            now=clock.now(),
            older_than=older_than,
            max_attempts=settings.max_send_attempts,
            give_up_body=ApiError(SEND_FAILED).response_body(),
        )
    )
    for job_id in found.given_up:
        logger.error("send job %s was lost %d times; failed", job_id, settings.max_send_attempts)
    for payload in found.republish:
        job = SendJobV1.model_validate(payload)
        logger.warning("send job %s was lost; publishing it again", job.job_id)
        send_message_task.apply_async(
            args=[payload],
            task_id=job.job_id,
            queue=SEND_QUEUE,
            argsrepr=job.redacted_repr(),
            kwargsrepr="{}",
        )
    return len(found.republish)


@app.task(
    name=DELIVER_TASK,
    acks_late=True,
    ignore_result=True,
    time_limit=_settings.mail_task_time_limit_seconds,
    soft_time_limit=_settings.mail_task_time_limit_seconds * 0.8,
)
def deliver_emails_task(payload: dict[str, Any]) -> dict[str, int]:
    """Deliver a chunk of outbox emails and schedule the retries of transient failures."""
    job = DeliverEmailsV1.model_validate(payload)
    settings = get_settings()
    report = outbox.deliver(
        get_database(),
        mail_transport(),
        job.email_ids,
        settings=settings,
        now=clock.now,
        claimed_by=worker_id(),
    )
    _schedule_retries(report.retry_in, settings)
    return {
        "sent": len(report.sent),
        "failed": len(report.failed),
        "retrying": len(report.retry_in),
    }


@app.task(
    name=DRAIN_TASK,
    acks_late=True,
    ignore_result=True,
    time_limit=_settings.mail_task_time_limit_seconds,
    soft_time_limit=_settings.mail_task_time_limit_seconds * 0.8,
)
def drain_outbox_task() -> None:
    """Deliver whatever is due, in batches, for up to half the task's time limit."""
    settings = get_settings()
    database = get_database(settings)
    hold_drain(settings)
    try:
        report = outbox.drain(
            database,
            mail_transport(),
            settings=settings,
            now=clock.now,
            budget_seconds=settings.mail_task_time_limit_seconds / 2,
            claimed_by=worker_id(),
        )
        _schedule_retries(report.retry_in, settings)
    finally:
        release_drain(settings)
    # Sends committed while this drain held the flag did not publish one: look again.
    due = database.run(
        lambda session: outbox.due_email_ids(session, now=clock.now(), limit=1), write=False
    )
    if due:
        kick_delivery(app, settings)


def _schedule_retries(retry_in: dict[int, float], settings: Settings) -> None:
    for email_id, delay in retry_in.items():
        # A countdown task waits unacknowledged in a worker; past the visibility timeout
        # Redis would hand it to a second worker. Longer waits are left to the sweep,
        # which finds the email due by its `next_attempt_at`.
        if delay < settings.broker_visibility_timeout_seconds / 2:
            queue_delivery(app, [email_id], countdown=delay)


@app.task(name=SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_outbox_task() -> int:
    """Queue every email that is due and unclaimed: after a lost task, a failed publish, a
    crashed mail worker or a long backoff. Safe to run anywhere, any number of times."""
    email_ids = get_database().run(
        lambda session: outbox.due_email_ids(session, now=clock.now()), write=False
    )
    queue_delivery(app, email_ids)
    return len(email_ids)


@app.task(name=PRUNE_TASK, acks_late=True, ignore_result=True)
def prune_task() -> dict[str, int]:
    """Delete jobs, emails, sessions and expired authentication tokens past
    `RETENTION_DAYS` (worker.domain.retention)."""
    settings = get_settings()
    if settings.retention_days <= 0:
        return {}
    pruned = retention.prune(
        get_database(settings),
        now=clock.now,
        keep=timedelta(days=settings.retention_days),
        budget_seconds=settings.send_task_time_limit_seconds / 2,
    )
    logger.info(
        "pruned %d jobs, %d emails, %d sessions, %d authentication tokens and %d workers",
        pruned.jobs,
        pruned.emails,
        pruned.sessions,
        pruned.tokens,
        pruned.workers,
    )
    return dataclasses.asdict(pruned)


@app.task(name=PING_TASK)
def ping_task() -> str:
    """Does nothing: a round trip through the broker, a send worker and the result backend
    (the benchmark's baseline, and a check that send workers answer)."""
    return "pong"
