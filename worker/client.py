"""Enqueue a send from another Python service, without HTTP (SPEC 4.1).

    from worker.client import SEND_TASK, build_send_job, send_job_options
    payload = build_send_job(sender_guid=..., message_guid=..., password="...",
                             secret_key=os.environ["SECRET_KEY"])
    result = celery_app.send_task(SEND_TASK, args=[payload], **send_job_options(payload))
    result.get(timeout=30)  # {"httpStatus": 200, "response": {...SendMessage body...}}

The calling service needs the same `SECRET_KEY` as the workers: the secret fields are
sealed with a key derived from it and never travel in plain text. Importing this module
creates no file and builds no Celery app.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from worker.domain.secrets import Keys
from worker.models import Lane, guid_n_form, new_guid
from worker.payloads import NotificationFormat, Priority, SendJobV1
from worker.queues import INTERACTIVE_SEND_QUEUE, SEND_QUEUE, SEND_TASK

__all__ = [
    "INTERACTIVE_SEND_QUEUE",
    "SEND_QUEUE",
    "SEND_TASK",
    "build_send_job",
    "send_job_options",
]


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
    secret_key: str | None = None,
    priority: Priority = "bulk",
) -> dict[str, Any]:
    """A validated `SendJobV1` payload as JSON, secrets sealed with `secret_key` (by
    default the `SECRET_KEY` of this process's environment). `priority="interactive"` is
    for a send a person waits for (it goes before every bulk send; docs/design.md,
    "Lanes"). Raises ValueError (pydantic's ValidationError for formats) for malformed
    GUIDs or formats."""
    if secret_key is None:
        from worker.settings import Settings

        secret_key = Settings().secret_key
    job = SendJobV1.for_send(
        job_id=job_id or new_guid(),
        sender_guid=guid_n_form(sender_guid),
        message_guid=guid_n_form(message_guid),
        password=password,
        cra_code=cra_code,
        invite_new_users=invite_new_users,
        send_email_notification=send_email_notification,
        notification_formats=notification_formats,
        lane=Lane.named(priority),
        keys=Keys(secret_key),
    )
    return job.model_dump(mode="json", by_alias=True)


def send_job_options(payload: dict[str, Any]) -> dict[str, Any]:
    """The `send_task` options that keep the payload out of Flower and route it to its
    lane's queue."""
    return SendJobV1.model_validate(payload).publish_options()
