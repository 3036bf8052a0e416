"""Celery tasks: thin wrappers that decode a payload, open one transaction and call the
domain. No SQL, SMTP or Jinja here."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from worker.celery_app import SEND_TASK, app
from worker.db import get_database
from worker.domain import clock
from worker.domain.errors import SEND_FAILED, ApiError
from worker.domain.send import SendOutcome, record_job_outcome, send_message
from worker.payloads import SendJobV1, SendResult, SendSecrets, payload_error
from worker.settings import get_settings

logger = logging.getLogger(__name__)

MAX_TRANSIENT_RETRIES = 3


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
    return SendResult(http_status=outcome.http_status, response=outcome.body).model_dump(
        by_alias=True
    )


def _give_up(job: SendJobV1, error: Exception) -> SendOutcome:
    logger.exception("send job %s failed: %s", job.job_id, type(error).__name__)
    outcome = SendOutcome.from_error(ApiError(SEND_FAILED))
    with get_database().write_session() as session:
        record_job_outcome(session, job=job, outcome=outcome, now=clock.now())
    return outcome
