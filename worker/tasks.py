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
from sqlalchemy.exc import OperationalError

from worker.celery_app import (
    DELIVER_TASK,
    DRAIN_TASK,
    JOBS_SWEEP_TASK,
    MAIL_QUEUE,
    PING_TASK,
    PRUNE_TASK,
    SEND_QUEUE,
    SEND_TASK,
    SWEEP_TASK,
    app,
)
from worker.db import get_database
from worker.domain import clock, jobs, outbox, retention
from worker.domain.errors import SEND_FAILED, ApiError
from worker.domain.send import SendOutcome, record_job_outcome, send_message
from worker.mailer import claim_drain, mail_transport, release_drain
from worker.payloads import DeliverEmailsV1, SendJobV1, SendResult, SendSecrets, payload_error
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 3
DELIVERY_CHUNK = 50
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
            kick_delivery()


@app.task(name=SEND_TASK, bind=True, acks_late=True, base=_SendTask)
def send_message_task(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one SendMessage job; returns `SendResult` as JSON (httpStatus, response)."""
    try:
        run = run_send_job(
            payload,
            settings=get_settings(),
            redelivered=bool(self.request.delivery_info.get("redelivered")),
            last_attempt=self.request.retries >= MAX_TRANSIENT_RETRIES,
        )
    except OperationalError as e:
        # The database went away or a lock timed out: nothing was committed, so retrying
        # the whole job is safe (and rule 4 makes a duplicate harmless).
        logger.warning("send job %s: database unavailable, retrying", self.request.id)
        raise self.retry(exc=e, countdown=2**self.request.retries) from e
    self.request.emails_queued = run.emails_queued
    return run.result


@dataclass(frozen=True, slots=True)
class SendJobRun:
    result: dict[str, Any]  # SendResult as JSON
    emails_queued: bool  # committed emails wait in the outbox: delivery must be kicked


def run_send_job(
    payload: dict[str, Any], *, settings: Settings, redelivered: bool, last_attempt: bool = True
) -> SendJobRun:
    """What the send task does, callable without Celery (the profiler calls it): decode,
    send in one transaction, log and answer. A database error propagates for a retry
    unless this is the `last_attempt`."""
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
    except OperationalError as e:
        if not last_attempt:
            raise
        outcome = _give_up(job, type(e).__name__, error=e)
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
    """Publish again the jobs whose broker message was lost; returns how many."""
    settings = get_settings()
    with get_database().write_session() as session:
        stale = jobs.take_stale_jobs(
            session,
            now=clock.now(),
            older_than=timedelta(seconds=settings.job_republish_after_seconds),
            max_attempts=settings.max_send_attempts,
            give_up_body=ApiError(SEND_FAILED).response_body(),
        )
    for payload in stale.republish:
        job = SendJobV1.model_validate(payload)
        logger.warning("send job %s was not picked up; publishing it again", job.job_id)
        send_message_task.apply_async(
            args=[payload],
            task_id=job.job_id,
            queue=SEND_QUEUE,
            argsrepr=job.redacted_repr(),
            kwargsrepr="{}",
        )
    return len(stale.republish)


def kick_delivery() -> None:
    """Make sure a drain of the outbox is on its way (one at a time; see `claim_drain`)."""
    settings = get_settings()
    if not claim_drain(settings):
        return
    try:
        drain_outbox_task.apply_async(
            queue=MAIL_QUEUE, countdown=settings.mail_batch_window_seconds or None
        )
    except Exception:  # noqa: BLE001 - the outbox row is the record; the sweep retries
        release_drain(settings)
        logger.warning("could not queue an outbox drain; the sweep will")


def queue_delivery(
    email_ids: tuple[int, ...] | list[int], *, countdown: float | None = None
) -> None:
    """Publish delivery of `email_ids` in chunks. If publishing fails the emails stay
    queued in the outbox and the sweeper picks them up."""
    for start in range(0, len(email_ids), DELIVERY_CHUNK):
        chunk = DeliverEmailsV1(email_ids=tuple(email_ids[start : start + DELIVERY_CHUNK]))
        try:
            deliver_emails_task.apply_async(
                args=[chunk.model_dump(by_alias=True)], queue=MAIL_QUEUE, countdown=countdown
            )
        except Exception:  # noqa: BLE001 - the outbox row is the record; the sweeper retries
            logger.warning(
                "could not queue delivery of %d emails; the sweep will", len(chunk.email_ids)
            )


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
        get_database(), mail_transport(), job.email_ids, settings=settings, now=clock.now
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
    try:
        report = outbox.drain(
            database,
            mail_transport(),
            settings=settings,
            now=clock.now,
            budget_seconds=settings.mail_task_time_limit_seconds / 2,
        )
        _schedule_retries(report.retry_in, settings)
    finally:
        release_drain(settings)
    # Sends committed while this drain held the flag did not publish one: look again.
    due = database.run(
        lambda session: outbox.due_email_ids(session, now=clock.now(), limit=1), write=False
    )
    if due:
        kick_delivery()


def _schedule_retries(retry_in: dict[int, float], settings: Settings) -> None:
    for email_id, delay in retry_in.items():
        # A countdown task waits unacknowledged in a worker; past the visibility timeout
        # Redis would hand it to a second worker. Longer waits are left to the sweep,
        # which finds the email due by its `next_attempt_at`.
        if delay < settings.broker_visibility_timeout_seconds / 2:
            queue_delivery([email_id], countdown=delay)


@app.task(name=SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_outbox_task() -> int:
    """Queue every email that is due and unclaimed: after a lost task, a failed publish, a
    crashed mail worker or a long backoff. Safe to run anywhere, any number of times."""
    email_ids = get_database().run(
        lambda session: outbox.due_email_ids(session, now=clock.now()), write=False
    )
    queue_delivery(email_ids)
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
        "pruned %d jobs, %d emails, %d sessions and %d authentication tokens",
        pruned.jobs,
        pruned.emails,
        pruned.sessions,
        pruned.tokens,
    )
    return dataclasses.asdict(pruned)


@app.task(name=PING_TASK)
def ping_task() -> str:
    """Does nothing: a round trip through the broker, a send worker and the result backend
    (the benchmark's baseline, and a check that send workers answer)."""
    return "pong"
