"""Response bodies: what the handlers answer (`wire.respond` writes them by alias, in
field order) and what /openapi.json and the metadata pages document. The `of` builders
are where the domain's dataclasses get their wire names and forms (ISO 8601 times, the
vendor's spellings)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from worker.domain.attachments import CHUNK_BYTES, AttachmentInfo, AttachmentLimits, PreCreated
from worker.domain.auth import LoginResult
from worker.domain.clock import iso_utc
from worker.domain.deliveries import DeliveryRecord
from worker.domain.jobs import JobView
from worker.domain.mailbox import MessagePage
from worker.domain.messages import MessageOptions, MessageView, Participant
from worker.domain.quotas import DailyQuotas
from worker.domain.users import UserSettings


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def _time(value: datetime) -> str:
    """A time as the API answers it (SPEC 2): ISO 8601 in UTC with a `Z`."""
    text = iso_utc(value)
    assert text is not None
    return text


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

    @classmethod
    def of(cls, result: LoginResult) -> Self:
        return cls(session_token=result.session_token, user_service_guid=result.user_guid)


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

    @classmethod
    def of(cls, user: UserSettings) -> Self:
        return cls(
            email_address=user.email,
            state=user.state.value.capitalize(),  # the vendor's spelling: Active, …
            registration_date=_time(user.registered_at),
            first_name=user.first_name,
            last_name=user.last_name,
            language=user.locale,
        )


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

    @classmethod
    def of(cls, job: JobView) -> Self:
        return cls(
            job_id=job.job_id,
            status=job.status.value,
            http_status=job.http_status,
            response=job.response,
        )


class Person(_Body):
    guid: str | None
    email: str
    first_name: str
    last_name: str

    @classmethod
    def of(cls, person: Participant) -> Self:
        return cls(
            guid=person.guid,
            email=person.email,
            first_name=person.first_name,
            last_name=person.last_name,
        )


class MessageOptionsOut(_Body):
    allow_forward: bool
    allow_reply: bool
    allow_reply_all: bool
    allow_tracking: bool
    fyeo_type: str
    confidential: bool
    share_tracking: bool

    @classmethod
    def of(cls, options: MessageOptions) -> Self:
        return cls(
            allow_forward=options.allow_forward,
            allow_reply=options.allow_reply,
            allow_reply_all=options.allow_reply_all,
            allow_tracking=options.allow_tracking,
            fyeo_type=options.fyeo_type.value,
            confidential=options.confidential,
            share_tracking=options.share_tracking,
        )


class AttachmentSummary(_Body):
    """A file of a message, as the vendor's SDKs read it (`guid` is the pre-created
    `attachmentGuid`)."""

    guid: str
    file_name: str
    file_size: int
    status: str = Field(description="Complete, or Uploading while chunks are missing.")
    chunk_count: int
    original_file_extension: str = Field(description="Without the dot; empty for none.")
    type: str = Field(description="Its media type, guessed from the extension.")

    @classmethod
    def of(cls, attachment: AttachmentInfo) -> Self:
        return cls(
            guid=attachment.guid,
            file_name=attachment.file_name,
            file_size=attachment.size,
            status="Complete" if attachment.complete else "Uploading",
            chunk_count=attachment.chunk_count,
            original_file_extension=attachment.extension,
            type=attachment.media_type,
        )


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
    attachments: list[AttachmentSummary]

    @classmethod
    def of(cls, message: MessageView) -> Self:
        def people(persons: tuple[Participant, ...]) -> list[Person]:
            return [Person.of(p) for p in persons]

        return cls(
            guid=message.guid,
            parent_guid=message.parent_guid,
            conversation_guid=message.conversation_guid,
            date=_time(message.date),
            status=message.status.value,
            action=message.action.value,
            sender=Person.of(message.sender),
            to=people(message.to),
            cc=people(message.cc),
            bcc=people(message.bcc),
            subject=message.subject,
            body=message.body,
            body_format=message.body_format.value,
            message_options=MessageOptionsOut.of(message.options),
            expiry_date=iso_utc(message.expiry_date),
            recall_date=iso_utc(message.recall_date),
            recall_reason=message.recall_reason,
            retrieved=message.retrieved,
            created_date=_time(message.created_at),
            sent_date=iso_utc(message.sent_at),
            attachments=[AttachmentSummary.of(a) for a in message.attachments],
        )


class SearchMessagesResponse(_Body):
    page_size: int
    total_pages: int
    total_items: int
    current_page: int
    results: list[MessageSummary]

    @classmethod
    def of(cls, page: MessagePage) -> Self:
        return cls(
            page_size=page.page_size,
            total_pages=page.total_pages,
            total_items=page.total,
            current_page=page.page,
            results=[MessageSummary.of(m) for m in page.messages],
        )


class QuotasResponse(_Body):
    daily_messages_allowed: int
    daily_messages_left: int
    daily_invites_allowed: int
    daily_invites_left: int

    @classmethod
    def of(cls, quotas: DailyQuotas) -> Self:
        return cls(
            daily_messages_allowed=quotas.messages_allowed,
            daily_messages_left=quotas.messages_left,
            daily_invites_allowed=quotas.invites_allowed,
            daily_invites_left=quotas.invites_left,
        )


class ChunkOut(_Body):
    chunk_number: int
    bytes_size: int
    byte_start_index: int
    byte_end_index: int = Field(description="The first byte after the chunk (start + size).")
    upload_uri: str = Field(description="Where to POST it (multipart, part 'upload').")


class AttachmentPlaceholderOut(_Body):
    attachment_guid: str
    file_name: str
    chunks: list[ChunkOut]


class PreCreateAttachmentsResponse(_Body):
    attachment_placeholders: list[AttachmentPlaceholderOut]

    @classmethod
    def of(cls, created: list[PreCreated], upload_uri: Callable[[str, int], str]) -> Self:
        """`upload_uri(attachment_guid, chunk_number)`: where each chunk goes."""
        return cls(
            attachment_placeholders=[
                AttachmentPlaceholderOut(
                    attachment_guid=file.guid,
                    file_name=file.file_name,
                    chunks=[
                        ChunkOut(
                            chunk_number=chunk.number,
                            bytes_size=chunk.size,
                            byte_start_index=chunk.start,
                            byte_end_index=chunk.end,
                            upload_uri=upload_uri(file.guid, chunk.number),
                        )
                        for chunk in file.chunks
                    ],
                )
                for file in created
            ]
        )


class ServiceSettingsResponse(_Body):
    max_message_file_size_bytes: int = Field(description="The largest file the caller may send.")
    max_message_total_size_bytes: int = Field(description="All of one message's files.")
    attachment_types: list[str] = Field(description="Allowed extensions; empty: any.")
    chunk_size_bytes: int = Field(description="The size of every chunk but a file's last.")

    @classmethod
    def of(cls, limits: AttachmentLimits) -> Self:
        return cls(
            max_message_file_size_bytes=limits.max_file_bytes,
            max_message_total_size_bytes=limits.max_message_bytes,
            attachment_types=list(limits.types),
            chunk_size_bytes=CHUNK_BYTES,
        )


class DeliveryOut(_Body):
    email: str = Field(description="The address the email went to.")
    kind: str = Field(description="Notification or Invitation.")
    status: str = Field(description="queued, sent, failed, suppressed, bounced or complained.")
    reason: str | None = Field(
        description="The relay's last reply when it refused or deferred; why it was suppressed."
    )
    attempts: int
    queued_at: str
    sent_at: str | None
    updated_at: str = Field(description="When its status or reply last changed.")

    @classmethod
    def of(cls, record: DeliveryRecord) -> Self:
        return cls(
            email=record.address,
            kind=record.kind.value.capitalize(),
            status=record.status,
            reason=record.reason,
            attempts=record.attempts,
            queued_at=_time(record.queued_at),
            sent_at=iso_utc(record.sent_at),
            updated_at=_time(record.updated_at),
        )


class MessageDeliveriesResponse(_Body):
    results: list[DeliveryOut]
