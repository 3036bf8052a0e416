"""Send jobs as the workers run them, without Celery (the tasks in worker.tasks are a line
or two around these; the profiler calls them directly): decode a job, send it in one
transaction, answer; and publish again the jobs the broker lost."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from worker import broker, drains
from worker.db import DATABASE_UNAVAILABLE
from worker.domain import clock, jobs, recovery
from worker.domain.errors import SEND_FAILED, ApiError
from worker.domain.send import SendOutcome, SendRequest, record_job_outcome, send_message
from worker.models import Channel
from worker.payloads import SendJobV1, SendResult, SendSecrets, payload_error
from worker.queues import SEND_QUEUES, SEND_TASK
from worker.runtime import Runtime

logger = logging.getLogger(__name__)

# A database outage (worker.db.DATABASE_UNAVAILABLE) leaves nothing committed (or the
# send was, and rule 4 answers it), so the job is safe to run again.


@dataclass(frozen=True, slots=True)
class SendJobRun:
    result: dict[str, Any]  # SendResult as JSON
    outcome: SendOutcome | None  # None for a payload that is not a SendJobV1


def run_send_job(runtime: Runtime, payload: dict[str, Any], *, redelivered: bool) -> SendJobRun:
    """Decode, send in one transaction, log and answer. A database that cannot be reached
    raises one of `DATABASE_UNAVAILABLE` (the caller retries); any other failure answers 503 and
    records it."""
    try:
        job = SendJobV1.model_validate(payload)
    except ValidationError as e:
        # Only direct enqueuers can send a bad payload; they get the shape HTTP callers get.
        return SendJobRun(_result(400, payload_error(e)), outcome=None)
    if redelivered:
        # The worker that had it died (or shut down) mid-task: count it, and stop a job
        # that keeps killing its workers.
        attempts = runtime.database.run(
            lambda session: jobs.count_attempt(session, job_id=job.job_id)
        )
        if attempts > runtime.settings.max_send_attempts:
            outcome = _give_up(runtime, job, f"redelivered {attempts} times")
            return SendJobRun(_result(outcome.http_status, outcome.body), outcome)
    try:
        request = _request(job, runtime)
        # Safe to run twice (`Database.run`): a second run answers rule 4's stored response.
        outcome = runtime.database.run(
            lambda session: send_message(
                session,
                request=request,
                now=clock.now(),
                settings=runtime.settings,
                keys=runtime.keys,
            )
        )
    except DATABASE_UNAVAILABLE:
        raise
    except Exception as e:  # noqa: BLE001 - the caller must always get an answer
        outcome = _give_up(runtime, job, type(e).__name__, error=e)
    # One line per send (each costs the worker ~0.05 ms): the answer, and for a send that
    # happened, how many it went to and how many emails it queued.
    logger.info(
        "send job %s answered %s %s: message %s, %d recipients, %d emails queued",
        job.job_id,
        outcome.http_status,
        outcome.result_code,
        job.message_guid,
        outcome.recipients,
        len(outcome.email_ids),
        extra={
            "job_id": job.job_id,
            "message_guid": job.message_guid,
            "code": outcome.result_code,
            "http_status": outcome.http_status,
            "recipients": outcome.recipients,
            "emails_queued": len(outcome.email_ids),
        },
    )
    if outcome.webhook_events:  # only a group with webhook endpoints has any
        drains.request_drain(runtime, channel=Channel.WEBHOOK)
    return SendJobRun(_result(outcome.http_status, outcome.body), outcome)


def payload_of(args: Any, kwargs: Any) -> object:
    """The job payload a send task was called with: enqueued as `args=[payload]` or as
    `kwargs={"payload": payload}` (None when neither)."""
    if args:
        return args[0]
    return kwargs.get("payload") if isinstance(kwargs, dict) else None


def may_queue_emails(payload: object) -> bool:
    """Whether a send of `payload` that succeeded can have put emails in the outbox: it
    asked for its notification, or to invite new users. Sends without either skip the
    drain request (a Redis round trip, sometimes a publish) altogether."""
    try:
        job = SendJobV1.model_validate(payload)
    except ValidationError:
        return False
    return job.send_email_notification or job.invite_new_users


def _request(job: SendJobV1, runtime: Runtime) -> SendRequest:
    """The send `job` asks for, its secrets opened (SealBroken for secrets sealed with
    another SECRET_KEY)."""
    secrets = SendSecrets.unsealed(job.sealed_secrets, runtime.keys)
    return SendRequest(
        job_id=job.job_id,
        sender_guid=job.sender_guid,
        message_guid=job.message_guid,
        invite_new_users=job.invite_new_users,
        send_email_notification=job.send_email_notification,
        notification_formats=job.notification_formats,
        lane=job.lane,
        password=secrets.password,
        cra_code=secrets.cra_code,
    )


def _result(http_status: int, body: dict[str, Any]) -> dict[str, Any]:
    return SendResult(http_status=http_status, response=body).model_dump(by_alias=True)


def _give_up(
    runtime: Runtime, job: SendJobV1, reason: str, *, error: Exception | None = None
) -> SendOutcome:
    logger.error("send job %s failed: %s", job.job_id, reason, exc_info=error)
    outcome = SendOutcome.from_error(ApiError(SEND_FAILED))
    # The job's identity only: its secrets may be what cannot be opened.
    request = SendRequest(
        job_id=job.job_id, sender_guid=job.sender_guid, message_guid=job.message_guid
    )
    runtime.database.run(
        lambda session: record_job_outcome(
            session, request=request, outcome=outcome, now=clock.now()
        )
    )
    return outcome


def republish_lost_jobs(runtime: Runtime) -> int:
    """Publish again the jobs whose broker message was lost: queued for a while, and
    neither waiting in a send queue (either lane's), nor delivered to a worker, nor held
    by a live one; each to its own lane. Returns how many."""
    settings, database = runtime.settings, runtime.database
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
    held = live.held | {d.task_id for d in broker.delivered(runtime.celery)}
    for queue in SEND_QUEUES:
        held |= broker.waiting(runtime.celery, settings, queue, set(stale) - held)
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
        runtime.celery.send_task(SEND_TASK, args=[payload], **job.publish_options())
    return len(found.republish)
