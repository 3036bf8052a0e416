"""Celery tasks: a line or two each around `worker.sending`, `worker.drains` and the
domain, with the pool process's runtime (`runtime.current()`). No SQL, SMTP or Jinja here.
docs/reliability.md says what each guarantees."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any

from celery import Task

from worker import drains, sending
from worker.celery_app import app
from worker.celery_factory import soft_time_limit
from worker.db import DATABASE_UNAVAILABLE
from worker.domain import clock, retention
from worker.queues import (
    DRAIN_TASK,
    JOBS_SWEEP_TASK,
    PING_TASK,
    PRUNE_TASK,
    SEND_TASK,
    SWEEP_TASK,
    WEBHOOK_DRAIN_TASK,
)
from worker.runtime import current
from worker.settings import get_settings

logger = logging.getLogger(__name__)

_mail_time_limit = get_settings().mail_task_time_limit_seconds

# While the database cannot be reached a send is tried again after these many seconds,
# about a minute in all; then the job is left queued, and the jobs sweep publishes it
# again once the database is back. It is never failed for an outage: its caller may
# have been told 202, and a 503 must mean "not sent" (SPEC 2).
DATABASE_RETRY_COUNTDOWNS = (1, 2, 4, 8, 15, 15, 15)


class _SendTask(Task):  # type: ignore[misc]
    # Flower (the task-succeeded event) shows a result as its repr cut at this many
    # characters: the HTTP status, never the notification, which quotes the subject.
    resultrepr_maxsize = len("{'httpStatus': 200, ")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        # Only a send that answers 200 and asked for a notification or invitations can
        # have queued emails. Asked for here, once the result is stored and on its way to
        # the waiting API, which keeps this round trip out of the answer's path.
        payload = sending.payload_of(args, kwargs)
        if retval.get("httpStatus") == 200 and sending.may_queue_emails(payload):
            drains.request_drain(current())


@app.task(name=SEND_TASK, bind=True, acks_late=True, base=_SendTask)
def send_message_task(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one SendMessage job; returns `SendResult` as JSON (httpStatus, response)."""
    try:
        redelivered = bool(self.request.delivery_info.get("redelivered"))
        return sending.run_send_job(current(), payload, redelivered=redelivered).result
    except DATABASE_UNAVAILABLE as e:
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


@app.task(name=JOBS_SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_jobs_task() -> int:
    """Publish again the send jobs the broker lost; returns how many."""
    return sending.republish_lost_jobs(current())


@app.task(
    name=DRAIN_TASK,
    acks_late=True,
    ignore_result=True,
    time_limit=_mail_time_limit,
    soft_time_limit=soft_time_limit(_mail_time_limit),
)
def drain_outbox_task() -> dict[str, int]:
    """Deliver whatever is due (worker.drains.run_drain)."""
    report = drains.run_drain(current())
    return {
        "sent": len(report.sent),
        "failed": len(report.failed),
        "retrying": len(report.retry_in),
        "deferred": len(report.deferred),
    }


@app.task(
    name=WEBHOOK_DRAIN_TASK,
    acks_late=True,
    ignore_result=True,
    time_limit=_mail_time_limit,
    soft_time_limit=soft_time_limit(_mail_time_limit),
)
def drain_webhooks_task() -> dict[str, int]:
    """Deliver the due webhook events (worker.drains.run_webhook_drain)."""
    report = drains.run_webhook_drain(current())
    return {
        "sent": len(report.sent),
        "failed": len(report.failed),
        "retrying": len(report.retry_in),
    }


@app.task(name=SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_outbox_task() -> bool:
    """Ask for a drain of each channel that has a row due that nobody holds."""
    return drains.sweep(current())


@app.task(name=PRUNE_TASK, acks_late=True, ignore_result=True)
def prune_task() -> dict[str, int]:
    """Delete jobs, emails, sessions and expired authentication tokens past
    `RETENTION_DAYS`, and drafts untouched for `DRAFT_RETENTION_DAYS` with their files
    (worker.domain.retention)."""
    runtime = current()
    settings = runtime.settings
    if settings.retention_days <= 0:
        return {}
    pruned = retention.prune(
        runtime.database,
        now=clock.now,
        keep=timedelta(days=settings.retention_days),
        budget_seconds=settings.send_task_time_limit_seconds / 2,
        keep_drafts=(
            timedelta(days=settings.draft_retention_days)
            if settings.draft_retention_days > 0
            else None
        ),
        store=runtime.chunk_store(),
    )
    logger.info(
        "pruned %d jobs, %d emails, %d sessions, %d authentication tokens, %d workers, "
        "%d drafts and their %d files",
        pruned.jobs,
        pruned.emails,
        pruned.sessions,
        pruned.tokens,
        pruned.workers,
        pruned.drafts,
        pruned.attachments,
    )
    return dataclasses.asdict(pruned)


@app.task(name=PING_TASK)
def ping_task() -> str:
    """Does nothing: a round trip through the broker, a send worker and the result backend
    (the benchmark's baseline, and a check that send workers answer)."""
    return "pong"
