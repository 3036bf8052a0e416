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


class AuthenticateResponse(LoginResponse):
    pass


class NewAuthenticationTokenResponse(_Body):
    authentication_token: str


class PingResponse(_Body):
    build: str = Field(description="The release of securesend.")
    version: int = Field(description="The version of the Secure Messaging API served.")
    min_supported_version: int = Field(description="The oldest API version still served.")


class UserSettingsResponse(_Body):
    email_address: str
    state: str = Field(description="Active, Disabled or Pending.")
    registration_date: str
    first_name: str
    last_name: str
    language: str


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
    """The vendor's MessageSummary (its names: `guid`, `date`, …) with the body."""

    guid: str
    parent_guid: str | None
    conversation_guid: str = Field(description="The first message of its reply tree.")
    date: str = Field(description="When it was sent; for a draft, last saved.")
    status: str = Field(description="Draft, Sent or Recalled.")
    action: str
    sender: Person
    to: list[Person]
    cc: list[Person]
    bcc: list[Person]
    subject: str
    body: str | None
    body_format: str
    message_options: MessageOptionsOut
    expiry_date: str | None
    recall_date: str | None
    recall_reason: str | None
    retrieved: bool = Field(description="Whether the caller has read it.")
    created_date: str
    sent_date: str | None


class SearchMessagesResponse(_Body):
    page_size: int
    total_pages: int
    total_items: int
    current_page: int
    results: list[MessageSummary]


class QuotasResponse(_Body):
    daily_messages_allowed: int
    daily_messages_left: int
    daily_invites_allowed: int
    daily_invites_left: int
