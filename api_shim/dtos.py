"""Request DTOs. Property names bind case-insensitively (`wire.bind`); GUIDs accept N and
D forms; enum values are case-insensitive."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api_shim.wire import CaseInsensitive, Guid, UtcDatetime, case_insensitive
from worker.models import BodyFormat, FyeoType, MessageAction
from worker.payloads import NotificationFormat

NotificationFormatIn = Annotated[NotificationFormat, case_insensitive(["Text", "Html"])]


class Dto(BaseModel):
    # camelCase names in /openapi.json; `wire.bind` matches any casing to the field names.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class Empty(Dto):
    pass


class LoginRequest(Dto):
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(max_length=1024)
    cookieless: bool = False


class PreCreateMessageRequest(Dto):
    action_code: CaseInsensitive(MessageAction) = MessageAction.NEW  # type: ignore[valid-type]
    parent_guid: Guid | None = None
    password: str = Field(default="", max_length=1024)


class MessageOptionsIn(Dto):
    allow_forward: bool = True
    allow_reply: bool = True
    allow_reply_all: bool = True
    allow_tracking: bool = False
    fyeo_type: CaseInsensitive(FyeoType) = FyeoType.DISABLED  # type: ignore[valid-type]
    confidential: bool = False
    share_tracking: bool = False


# Limits on what a draft may hold (docs/security.md); beyond them: 400 ValidationException.
MAX_ADDRESSES = 500
MAX_SUBJECT = 1_000
MAX_BODY = 1_000_000
Address = Annotated[str, Field(max_length=320)]


class SaveMessageRequest(Dto):
    message_guid: Guid
    to: list[Address] | None = Field(default=None, max_length=MAX_ADDRESSES)
    cc: list[Address] | None = Field(default=None, max_length=MAX_ADDRESSES)
    bcc: list[Address] | None = Field(default=None, max_length=MAX_ADDRESSES)
    subject: str | None = Field(default=None, max_length=MAX_SUBJECT)
    body: str | None = Field(default=None, max_length=MAX_BODY)
    body_format: CaseInsensitive(BodyFormat) | None = None  # type: ignore[valid-type]
    message_options: MessageOptionsIn | None = None
    expiry_date: UtcDatetime | None = None


class MessageRequest(Dto):
    message_guid: Guid
    retrieve_body: bool = True


class SendMessageRequest(Dto):
    message_guid: Guid
    password: str | None = Field(default=None, max_length=1024)
    invite_new_users: bool | None = None
    send_email_notification: bool | None = None
    cra_code: str | None = Field(default=None, max_length=1024)
    notification_formats: list[NotificationFormatIn] | None = None


class JobRequest(Dto):
    job_id: Guid


class RecallMessageRequest(Dto):
    message_guid: Guid
    recall_reason: str | None = Field(default=None, max_length=1000)


class InboxRequest(Dto):
    page: int = Field(default=1, ge=1, le=1_000_000)
    page_size: int = Field(default=25, ge=1, le=100)
