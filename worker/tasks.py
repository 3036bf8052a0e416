"""Celery tasks: thin wrappers that decode a payload, open one transaction and call the
domain. No SQL, SMTP or Jinja here."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from worker.celery_app import DELIVER_TASK, MAIL_QUEUE, SEND_TASK, SWEEP_TASK, app
from worker.db import get_database
from worker.domain import clock, outbox
from worker.domain.errors import SEND_FAILED, ApiError
from worker.domain.send import SendOutcome, record_job_outcome, send_message
from worker.mailer import mail_transport
from worker.payloads import DeliverEmailsV1, SendJobV1, SendResult, SendSecrets, payload_error
from worker.settings import get_settings

logger = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 3
DELIVERY_CHUNK = 50
MAIL_TASK_TIME_LIMIT_SECONDS = 300


@app.task(name=SEND_TASK, bind=True, acks_late=True)
def send_message_task(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one SendMessage job; returns `SendResult` as JSON (httpStatus, response)."""
    try:
        job = SendJobV1.model_validate(payload)
    except ValidationError as e:
        # Only direct enqueuers can send a bad payload; they get the shape HTTP callers get.
        return SendResult(http_status=400, response=payload_error(e)).model_dump(by_alias=True)
    settings = get_settings()
    database = get_database(settings)
    try:
        secrets = SendSecrets.unsealed(job.sealed_secrets)
        with database.write_session() as session:
            outcome = send_message(
                session, job=job, secrets=secrets, now=clock.now(), settings=settings
            )
    except OperationalError as e:
        # The database went away or a lock timed out: nothing was committed, so retrying
        # the whole job is safe (and rule 4 makes a duplicate harmless).
        if self.request.retries < MAX_TRANSIENT_RETRIES:
            logger.warning("send job %s: database unavailable, retrying", job.job_id)
            raise self.retry(exc=e, countdown=2**self.request.retries) from e
        outcome = _give_up(job, e)
    except Exception as e:  # noqa: BLE001 - the caller must always get an answer
        outcome = _give_up(job, e)
    queue_delivery(outcome.email_ids)  # only now: the emails are committed
    return SendResult(http_status=outcome.http_status, response=outcome.body).model_dump(
        by_alias=True
    )


def _give_up(job: SendJobV1, error: Exception) -> SendOutcome:
    logger.exception("send job %s failed: %s", job.job_id, type(error).__name__)
    outcome = SendOutcome.from_error(ApiError(SEND_FAILED))
    with get_database().write_session() as session:
        record_job_outcome(session, job=job, outcome=outcome, now=clock.now())
    return outcome


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
                "could not queue delivery of %d emails; the sweeper will", len(chunk.email_ids)
            )


@app.task(
    name=DELIVER_TASK,
    acks_late=True,
    time_limit=MAIL_TASK_TIME_LIMIT_SECONDS,
    soft_time_limit=MAIL_TASK_TIME_LIMIT_SECONDS - 30,
)
def deliver_emails_task(payload: dict[str, Any]) -> dict[str, int]:
    """Deliver a chunk of outbox emails and schedule the retries of transient failures."""
    job = DeliverEmailsV1.model_validate(payload)
    report = outbox.deliver(
        get_database(), mail_transport(), job.email_ids, settings=get_settings(), now=clock.now
    )
    for email_id, delay in report.retry_in.items():
        queue_delivery([email_id], countdown=delay)
    return {
        "sent": len(report.sent),
        "failed": len(report.failed),
        "retrying": len(report.retry_in),
    }


@app.task(name=SWEEP_TASK, acks_late=True)
def sweep_outbox_task() -> int:
    """Queue every email that is due and unclaimed: after a lost task, a failed publish or
    a crashed mail worker. Safe to run anywhere, any number of times."""
    with get_database().read_session() as session:
        email_ids = outbox.due_email_ids(session, now=clock.now())
    queue_delivery(email_ids)
    return len(email_ids)
