"""Request DTOs. Property names bind case-insensitively (`wire.bind`), a null is "not
given"; GUIDs accept N and D forms; enum values are case-insensitive. Each field's
description is what /openapi.json and the ServiceStack metadata pages show."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api_shim.wire import CaseInsensitive, Flag, Guid, UtcDatetime, case_insensitive
from worker.domain.attachments import MAX_FILES_PER_REQUEST
from worker.domain.mailbox import Folder
from worker.models import BodyFormat, FyeoType, MessageAction
from worker.payloads import NotificationFormat

NotificationFormatIn = Annotated[NotificationFormat, case_insensitive(["Text", "Html"])]


class Dto(BaseModel):
    # camelCase names in /openapi.json; `wire.bind` matches any casing to the field names.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class Empty(Dto):
    pass


# Limits on what a request may hold (docs/security.md); beyond them: 400 ValidationException.
MAX_ADDRESSES = 500
MAX_SUBJECT = 1_000
MAX_BODY = 1_000_000
MAX_SECRET = 1024
MAX_PAGE = 1_000_000
Address = Annotated[str, Field(max_length=320)]
Secret = Annotated[str, Field(max_length=MAX_SECRET)]
COOKIELESS = "Answer the session token only in the body, without setting the ss-id cookie."


class LoginRequest(Dto):
    username: str | None = Field(
        default=None, min_length=1, max_length=320, description="The user's email address."
    )
    password: Secret | None = Field(default=None, description="The account password.")
    cookieless: Flag = Field(default=False, description=COOKIELESS)
    authentication_token: Secret | None = Field(
        default=None,
        description="Instead of username and password: a token from "
        "GetNewAuthenticationToken (as Authenticate takes it).",
    )


class AuthenticateRequest(Dto):
    authentication_token: Secret = Field(
        min_length=1, description="A token from GetNewAuthenticationToken."
    )
    cookieless: Flag = Field(default=False, description=COOKIELESS)


class NewAuthenticationTokenRequest(Dto):
    authentication_token_max_days: int = Field(
        default=14, ge=1, le=365, description="How many days the token opens sessions."
    )


class ExpireAuthenticationTokenRequest(Dto):
    authentication_token: Secret = Field(min_length=1, description="The token to revoke.")


class PreCreateMessageRequest(Dto):
    action_code: CaseInsensitive(MessageAction) = Field(  # type: ignore[valid-type]
        default=MessageAction.NEW, description="What the draft is: New, Reply, ReplyAll, Forward."
    )
    parent_guid: Guid | None = Field(
        default=None, description="The message replied to or forwarded."
    )
    password: Secret = Field(
        default="", description="The FYEO password of the parent, when it has one."
    )


class MessageOptionsIn(Dto):
    allow_forward: Flag = True
    allow_reply: Flag = True
    allow_reply_all: Flag = True
    allow_tracking: Flag = False
    fyeo_type: CaseInsensitive(FyeoType) = FyeoType.DISABLED  # type: ignore[valid-type]
    confidential: Flag = False
    share_tracking: Flag = False


class SaveMessageRequest(Dto):
    message_guid: Guid = Field(description="The draft, from PreCreateMessage.")
    to: list[Address] | None = Field(
        default=None, max_length=MAX_ADDRESSES, description="Recipient addresses."
    )
    cc: list[Address] | None = Field(default=None, max_length=MAX_ADDRESSES)
    bcc: list[Address] | None = Field(default=None, max_length=MAX_ADDRESSES)
    subject: str | None = Field(default=None, max_length=MAX_SUBJECT)
    body: str | None = Field(default=None, max_length=MAX_BODY)
    body_format: CaseInsensitive(BodyFormat) | None = None  # type: ignore[valid-type]
    message_options: MessageOptionsIn | None = None
    expiry_date: UtcDatetime = Field(
        default=None,
        description="When the message expires: ISO 8601 or /Date(ms)/; an empty string "
        "removes a saved one.",
    )


class MessageGuidRequest(Dto):
    message_guid: Guid


class MessageRequest(Dto):
    message_guid: Guid
    retrieve_body: Flag = Field(default=True, description="Also answer the body.")


class SendMessageRequest(Dto):
    message_guid: Guid = Field(description="The draft to send.")
    password: Secret | None = Field(
        default=None, description="The FYEO password (account or unique), when FYEO is on."
    )
    invite_new_users: Flag | None = Field(
        default=None, description="Invite recipients who are not users yet (null = false)."
    )
    send_email_notification: Flag | None = Field(
        default=None, description="Email each recipient a notification (null = true)."
    )
    cra_code: Secret | None = Field(
        default=None, description="The CRA code invited recipients must enter."
    )
    notification_formats: list[NotificationFormatIn] | None = Field(
        default=None,
        max_length=10,
        description="Text and/or Html: the notification bodies answered (none = both).",
    )


class JobRequest(Dto):
    job_id: Guid


class RecallMessageRequest(Dto):
    message_guid: Guid
    recall_reason: str | None = Field(default=None, max_length=1000)


class SortType(enum.StrEnum):
    DATE = "Date"


class SortDirection(enum.StrEnum):
    DESC = "Desc"
    ASC = "Asc"


class SearchFilter(Dto):
    types: list[CaseInsensitive(Folder)] | None = Field(  # type: ignore[valid-type]
        default=None,
        max_length=4,
        description="Inbox, Sent, Draft, Trash (none = all of the caller's).",
    )
    search_criteria: str | None = Field(
        default=None,
        max_length=MAX_SUBJECT,
        description="A part of the subject, or of the sender's or a recipient's email, "
        "first or last name (any case).",
    )


class SearchSort(Dto):
    type: CaseInsensitive(SortType) = SortType.DATE  # type: ignore[valid-type]
    direction: CaseInsensitive(SortDirection) = SortDirection.DESC  # type: ignore[valid-type]


class InboxRequest(Dto):
    page: int = Field(default=1, ge=1, le=MAX_PAGE, description="From 1.")
    page_size: int = Field(default=25, ge=1, le=100)


class SearchMessagesRequest(InboxRequest):
    filter: SearchFilter | None = Field(
        default=None, description="JSON or JSV in a query string: {types:[Inbox]}."
    )
    sort: SearchSort | None = None


# Attachments (SPEC 9). The domain checks names and the group's limits; these bounds keep
# what cannot be a file out (-1 bytes, 2^63 bytes, chunk 0).
MAX_FILE_BYTES = 2**53
MAX_FILE_NAME_IN = 1_000


class AttachmentPlaceholderIn(Dto):
    file_name: str = Field(max_length=MAX_FILE_NAME_IN, description="The file's name.")
    total_bytes_length: int = Field(ge=0, le=MAX_FILE_BYTES, description="Its size in bytes.")


class PreCreateAttachmentsRequest(Dto):
    message_guid: Guid = Field(description="The draft the files are for.")
    attachment_placeholders: list[AttachmentPlaceholderIn] = Field(
        min_length=1, max_length=MAX_FILES_PER_REQUEST, description="The files to make room for."
    )


class UploadAttachmentChunkRequest(Dto):
    attachment_guid: Guid = Field(description="From PreCreateAttachments.")
    chunk_number: int = Field(ge=1, le=2**31 - 1, description="From 1, as pre-created.")


class RemoveAttachmentRequest(Dto):
    message_guid: Guid | None = Field(
        default=None, description="The draft (DELETE /attachments/{guid}: the file's own)."
    )
    attachment_guid: Guid


class DownloadAttachmentRequest(Dto):
    attachment_guid: Guid
    # What the vendor's clients may send besides: accepted, and the file is answered as
    # it was uploaded.
    preview: Flag | None = Field(default=None, description="Ignored: the file as uploaded.")
    download_type: str | None = Field(default=None, max_length=100, description="Ignored.")
    download_file_type: str | None = Field(default=None, max_length=100, description="Ignored.")
