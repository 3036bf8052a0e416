"""Enqueue a send from another Python service, without HTTP (SPEC 4.1).

    from worker.client import build_send_job, SEND_TASK
    payload = build_send_job(sender_guid=..., message_guid=..., password="...")
    result = celery_app.send_task(SEND_TASK, args=[payload], task_id=payload["jobId"])
    result.get(timeout=30)  # {"httpStatus": 200, "response": {...SendMessage body...}}

The calling service needs the same `SECRET_KEY` as the workers: the secret fields are
sealed with a key derived from it and never travel in plain text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from worker.models import new_guid
from worker.payloads import NotificationFormat, SendJobV1
from worker.queues import SEND_QUEUE, SEND_TASK

__all__ = ["SEND_QUEUE", "SEND_TASK", "build_send_job", "send_job_options"]


def build_send_job(
    *,
    sender_guid: str,
    message_guid: str,
    password: str = "",
    cra_code: str = "",
    invite_new_users: bool = False,
    send_email_notification: bool = True,
    notification_formats: Iterable[NotificationFormat] = (),
    job_id: str | None = None,
) -> dict[str, Any]:
    """A validated `SendJobV1` payload as JSON, secrets sealed. Raises pydantic's
    ValidationError for malformed GUIDs or formats."""
    job = SendJobV1.for_send(
        job_id=job_id or new_guid(),
        sender_guid=sender_guid.replace("-", "").lower(),
        message_guid=message_guid.replace("-", "").lower(),
        password=password,
        cra_code=cra_code,
        invite_new_users=invite_new_users,
        send_email_notification=send_email_notification,
        notification_formats=notification_formats,
    )
    return job.model_dump(mode="json", by_alias=True)


def send_job_options(payload: dict[str, Any]) -> dict[str, Any]:
    """The `send_task` options that keep the payload out of Flower and route it right."""
    job = SendJobV1.model_validate(payload)
    return {
        "task_id": job.job_id,
        "queue": SEND_QUEUE,
        "argsrepr": job.redacted_repr(),
        "kwargsrepr": "{}",
    }
