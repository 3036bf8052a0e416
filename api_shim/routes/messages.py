"""PreCreateMessage, SaveMessage, GetMessage, RecallMessage, SearchMessages and GetInbox."""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

from api_shim.dtos import (
    InboxRequest,
    MessageGuidRequest,
    MessageRequest,
    PreCreateMessageRequest,
    RecallMessageRequest,
    SaveMessageRequest,
    SearchMessagesRequest,
    SortDirection,
)
from api_shim.pipeline import Call
from api_shim.registry import Operation
from api_shim.responses import (
    DeliveryOut,
    EmptyResponse,
    MessageDeliveriesResponse,
    MessageSummary,
    PreCreateMessageResponse,
    SearchMessagesResponse,
)
from worker.domain import clock, deliveries, errors, mailbox, messages
from worker.domain.errors import ApiError

FYEO_PASSWORD_HEADER = "x-sm-password"
Paged = TypeVar("Paged", bound=InboxRequest)


async def precreate_message(call: Call[PreCreateMessageRequest]) -> PreCreateMessageResponse:
    dto, now = call.dto, clock.now()
    guid = await call.write(
        lambda session, caller: messages.precreate_message(
            session,
            caller=caller,
            action=dto.action_code,
            parent_guid=dto.parent_guid,
            parent_password=dto.password,
            now=now,
        )
    )
    return PreCreateMessageResponse(message_guid=guid)


async def save_message(call: Call[SaveMessageRequest]) -> EmptyResponse:
    dto = call.dto
    options = dto.message_options
    changes = messages.DraftChanges(
        to=dto.to,
        cc=dto.cc,
        bcc=dto.bcc,
        subject=dto.subject,
        body=dto.body,
        body_format=dto.body_format,
        options=messages.MessageOptions(**options.model_dump()) if options else None,
        expiry_date=dto.expiry_date,
        expiry_given="expiry_date" in dto.model_fields_set,
    )
    now = clock.now()
    await call.write(
        lambda session, caller: messages.save_message(
            session, caller=caller, guid=dto.message_guid, changes=changes, now=now
        )
    )
    return EmptyResponse()


def fyeo_password(encoded: str | None) -> str | None:
    if encoded is None:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(errors.FYEO_PASSWORD_WRONG) from None


async def get_message(call: Call[MessageRequest]) -> MessageSummary:
    dto, now = call.dto, clock.now()
    encoded_password = call.request.headers.get(FYEO_PASSWORD_HEADER)
    # A write transaction: wrong FYEO passwords are counted. The header is decoded after
    # rule 1: a bad session answers 811 whatever it holds.
    view = await call.write(
        lambda session, caller: messages.get_message(
            session,
            caller=caller,
            guid=dto.message_guid,
            include_body=dto.retrieve_body,
            fyeo_password=fyeo_password(encoded_password),
            now=now,
        )
    )
    return MessageSummary.of(view)


async def get_message_deliveries(call: Call[MessageGuidRequest]) -> MessageDeliveriesResponse:
    guid = call.dto.message_guid
    records = await call.read(
        lambda session, caller: deliveries.message_deliveries(session, caller=caller, guid=guid)
    )
    return MessageDeliveriesResponse(results=[DeliveryOut.of(r) for r in records])


async def recall_message(call: Call[RecallMessageRequest]) -> EmptyResponse:
    dto, now, keys = call.dto, clock.now(), call.services.keys
    events = await call.write(
        lambda session, caller: messages.recall_message(
            session,
            caller=caller,
            guid=dto.message_guid,
            reason=dto.recall_reason,
            now=now,
            keys=keys,
        )
    )
    if events:
        await call.services.webhook_events_queued()
    return EmptyResponse()


async def _search(call: Call[Paged], search: mailbox.MessageSearch) -> SearchMessagesResponse:
    now = clock.now()
    page = await call.read(
        lambda session, caller: mailbox.search_messages(
            session, caller=caller, search=search, now=now
        )
    )
    return SearchMessagesResponse.of(page)


async def search_messages(call: Call[SearchMessagesRequest]) -> SearchMessagesResponse:
    dto = call.dto
    criteria = dto.filter.search_criteria if dto.filter else None
    folders = dto.filter.types if dto.filter else None
    search = mailbox.MessageSearch(
        folders=frozenset(folders) if folders else mailbox.ALL_FOLDERS,
        criteria=(criteria or "").strip(),
        ascending=dto.sort is not None and dto.sort.direction is SortDirection.ASC,
        page=dto.page,
        page_size=dto.page_size,
    )
    return await _search(call, search)


async def get_inbox(call: Call[InboxRequest]) -> SearchMessagesResponse:
    search = mailbox.MessageSearch(
        folders=frozenset({mailbox.Folder.INBOX}), page=call.dto.page, page_size=call.dto.page_size
    )
    return await _search(call, search)


OPERATIONS = (
    # SearchMessages and GetInbox before GetMessage: /messages/search and /messages/inbox
    # must not be taken for a GUID.
    Operation(
        "SearchMessages",
        (("GET", "/messages/search"),),
        SearchMessagesRequest,
        search_messages,
        summary="The caller's messages by folder and text, a page at a time",
        response=SearchMessagesResponse,
    ),
    Operation(
        "GetInbox",
        (("GET", "/messages/inbox"),),
        InboxRequest,
        get_inbox,
        summary="What the caller received (SearchMessages with types [Inbox])",
        response=SearchMessagesResponse,
    ),
    Operation(
        "RecallMessage",
        (("POST", "/messages/{messageGuid}/recall"),),
        RecallMessageRequest,
        recall_message,
        summary="Recall a message (or a draft)",
        errors=(errors.MESSAGE_NOT_FOUND, errors.NO_RECALL_FEATURE),
    ),
    Operation(
        "PreCreateMessage",
        (("POST", "/messages/"), ("POST", "/messages")),
        PreCreateMessageRequest,
        precreate_message,
        summary="Create an empty draft (new, reply, reply-all or forward)",
        response=PreCreateMessageResponse,
        errors=(
            errors.PARENT_NOT_FOUND,
            errors.FYEO_PASSWORD_WRONG,
            errors.NO_ACCESS,
            errors.MESSAGE_RECALLED,
            errors.REPLY_NOT_ALLOWED,
            errors.FORWARD_NOT_ALLOWED,
            errors.REPLY_ALL_NOT_ALLOWED,
        ),
    ),
    Operation(
        "SaveMessage",
        (("PUT", "/messages/{messageGuid}/save"),),
        SaveMessageRequest,
        save_message,
        summary="Save a draft",
        errors=(
            errors.MESSAGE_NOT_FOUND,
            errors.NO_CONFIDENTIAL_FEATURE,
            errors.NO_FYEO_FEATURE,
            errors.REPLY_ALL_NOT_ALLOWED,
            errors.ALREADY_SENT,
        ),
    ),
    Operation(
        "GetMessageDeliveries",
        (("GET", "/messages/{messageGuid}/deliveries"),),
        MessageGuidRequest,
        get_message_deliveries,
        summary="What became of each email of one of the caller's messages (the sender only)",
        response=MessageDeliveriesResponse,
        errors=(errors.MESSAGE_NOT_FOUND,),
    ),
    Operation(
        "GetMessage",
        (("GET", "/messages/{messageGuid}"),),
        MessageRequest,
        get_message,
        summary="A message, for its sender or a recipient",
        response=MessageSummary,
        errors=(
            errors.MESSAGE_NOT_FOUND,
            errors.MESSAGE_RECALLED,
            errors.EXPIRY_INVALID,
            errors.FYEO_PASSWORD_MISSING,
            errors.FYEO_PASSWORD_WRONG,
            errors.FYEO_LOCKED,
        ),
    ),
)
