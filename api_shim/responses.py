"""Response bodies, for /openapi.json (the handlers build plain dicts of these shapes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ResponseError(_Body):
    error_code: str
    field_name: str
    message: str
    meta: dict[str, str] = Field(default_factory=dict)


class ResponseStatus(_Body):
    error_code: str
    message: str
    errors: list[ResponseError] = Field(default_factory=list)
    meta: dict[str, str] = Field(default_factory=dict)


class ErrorResponse(_Body):
    """Every error: the HTTP status plus a ServiceStack `responseStatus`."""

    response_status: ResponseStatus


class EmptyResponse(_Body):
    pass


class LoginResponse(_Body):
    session_token: str
    user_service_guid: str


class PreCreateMessageResponse(_Body):
    message_guid: str


class SendMessageResponse(_Body):
    notification_body_text: str | None
    notification_body_html: str | None
    notification_sent: bool
    response_status: None = None


class JobAccepted(_Body):
    job_id: str
    status: str


class JobResponse(_Body):
    job_id: str
    status: str
    http_status: int | None
    response: dict[str, Any] | None


class Person(_Body):
    guid: str | None
    email: str
    first_name: str
    last_name: str


class MessageOptionsOut(_Body):
    allow_forward: bool
    allow_reply: bool
    allow_reply_all: bool
    allow_tracking: bool
    fyeo_type: str
    confidential: bool
    share_tracking: bool


class MessageSummary(_Body):
    message_guid: str
    parent_guid: str | None
    status: str
    action: str
    sender: Person
    to: list[Person]
    cc: list[Person]
    bcc: list[Person]
    subject: str
    body: str | None
    body_format: str
    message_options: MessageOptionsOut
    created_date: str | None
    sent_date: str | None
    expiry_date: str | None
    recall_date: str | None
    recall_reason: str | None


class InboxResponse(_Body):
    results: list[MessageSummary]
    total_items: int


class QuotasResponse(_Body):
    daily_messages_allowed: int
    daily_messages_left: int
    daily_invites_allowed: int
    daily_invites_left: int
