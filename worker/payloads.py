"""The Celery job payloads: versioned, validated, carrying ids and small JSON only.

`SendJobV1` is also the public contract for services that enqueue
`securesend.send_message` directly (README, "Enqueue from another service"). Its secret
fields travel sealed (`sealedSecrets`), never in plain text in the broker or in Flower.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from worker.domain.errors import FieldError, validation_error
from worker.domain.secrets import Keys
from worker.models import Lane
from worker.queues import INTERACTIVE_SEND_QUEUE, SEND_QUEUE

GUID_PATTERN = r"^[0-9a-f]{32}$"
# A job's sender before its session is read: the job row's insert writes the caller's
# guid over it (worker.domain.jobs.open_send_job_as), and the API publishes the job with
# that guid.
SENDER_FROM_SESSION = "0" * 32
NotificationFormat = Literal["Text", "Html"]
# The lane a job runs in (`Lane`, docs/design.md "Lanes"); a payload without it is bulk.
Priority = Literal["interactive", "bulk"]
QUEUE_OF_LANE = {Lane.INTERACTIVE: INTERACTIVE_SEND_QUEUE, Lane.BULK: SEND_QUEUE}


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SendSecrets(_Wire):
    """The secret inputs of a send; only ever carried sealed."""

    password: str = ""
    cra_code: str = ""

    def sealed(self, keys: Keys) -> str:
        return keys.seal(self.model_dump_json(by_alias=True))

    @classmethod
    def unsealed(cls, sealed: str | None, keys: Keys) -> SendSecrets:
        if not sealed:
            return cls()
        return cls.model_validate(json.loads(keys.unseal(sealed)))


class SendJobV1(_Wire):
    """Send one draft message on behalf of its sender (SendMessage, SPEC 3)."""

    version: Literal[1] = 1
    job_id: str = Field(pattern=GUID_PATTERN)
    sender_guid: str = Field(pattern=GUID_PATTERN)
    message_guid: str = Field(pattern=GUID_PATTERN)
    invite_new_users: bool = False
    send_email_notification: bool = True
    notification_formats: tuple[NotificationFormat, ...] = ("Text", "Html")
    sealed_secrets: str | None = None
    priority: Priority = Field(
        default="bulk",
        description="The lane: interactive for a send a person waits for (workers take it "
        "before every bulk send, and deliver its emails first); bulk, the default, for "
        "anything else.",
    )

    @field_validator("notification_formats")
    @classmethod
    def _both_when_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return value or ("Text", "Html")

    @classmethod
    def for_send(
        cls,
        *,
        job_id: str,
        sender_guid: str,
        message_guid: str,
        password: str = "",
        cra_code: str = "",
        invite_new_users: bool = False,
        send_email_notification: bool = True,
        notification_formats: Iterable[str] = (),
        lane: Lane = Lane.BULK,
        keys: Keys,
    ) -> SendJobV1:
        """A job with its secrets sealed (only when there are any) and its formats
        de-duplicated. Raises pydantic's ValidationError for malformed GUIDs or formats."""
        secrets = SendSecrets(password=password, cra_code=cra_code)
        return cls.model_validate(
            {
                "job_id": job_id,
                "sender_guid": sender_guid,
                "message_guid": message_guid,
                "invite_new_users": invite_new_users,
                "send_email_notification": send_email_notification,
                "notification_formats": tuple(dict.fromkeys(notification_formats)),
                "sealed_secrets": secrets.sealed(keys) if password or cra_code else None,
                "priority": lane.label,
            }
        )

    @property
    def lane(self) -> Lane:
        return Lane.named(self.priority)

    def redacted_repr(self) -> str:
        """What Flower and the logs may show of this job."""
        return f"SendJobV1(job={self.job_id}, message={self.message_guid})"

    def publish_options(self) -> dict[str, Any]:
        """The `send_task` options of this job: its id, its lane's queue, and what Flower
        shows of its arguments (the payload never)."""
        return {
            "task_id": self.job_id,
            "queue": QUEUE_OF_LANE[self.lane],
            "argsrepr": self.redacted_repr(),
            "kwargsrepr": "{}",
        }


class SendResult(_Wire):
    """What the send task returns: the HTTP status and body SendMessage answers."""

    http_status: int
    response: dict[str, object]


def payload_error(error: ValidationError) -> dict[str, object]:
    """A ServiceStack ValidationException body for an invalid job payload."""
    field_errors = [
        FieldError("InvalidValue", ".".join(str(p) for p in e["loc"]) or "payload", e["msg"])
        for e in error.errors(include_input=False, include_url=False)
    ]
    return validation_error(*field_errors, message="Invalid job payload").response_body()


def published_schemas() -> dict[str, Any]:
    """The JSON Schemas other services code against (docs/send-job-v1.schema.json)."""
    return {
        "SendJobV1": SendJobV1.model_json_schema(by_alias=True),
        "SendResult": SendResult.model_json_schema(by_alias=True),
    }
