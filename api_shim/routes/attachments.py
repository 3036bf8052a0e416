"""PreCreateAttachments, UploadAttachmentChunk, RemoveAttachment, DownloadAttachment and
GetServiceSettings: sending a file as the vendor's SDKs do (SPEC 9)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from api_shim.dtos import (
    DownloadAttachmentRequest,
    Empty,
    PreCreateAttachmentsRequest,
    RemoveAttachmentRequest,
    UploadAttachmentChunkRequest,
)
from api_shim.multipart import uploaded_bytes
from api_shim.pipeline import Call
from api_shim.registry import Operation
from api_shim.responses import (
    EmptyResponse,
    PreCreateAttachmentsResponse,
    ServiceSettingsResponse,
)
from api_shim.routes.messages import FYEO_PASSWORD_HEADER, fyeo_password
from api_shim.wire import client_base_url
from worker.domain import attachments, clock, errors
from worker.domain.attachments import CHUNK_BYTES, Download, Placeholder

logger = logging.getLogger(__name__)
# A chunk, and room for a multipart envelope and the C# client's text parts around it.
UPLOAD_BODY_LIMIT = CHUNK_BYTES + 64 * 1024


async def precreate_attachments(
    call: Call[PreCreateAttachmentsRequest],
) -> PreCreateAttachmentsResponse:
    dto, now = call.dto, clock.now()
    placeholders = [
        Placeholder(file_name=p.file_name, size=p.total_bytes_length)
        for p in dto.attachment_placeholders
    ]
    created = await call.write(
        lambda session, caller: attachments.precreate_attachments(
            session,
            caller=caller,
            message_guid=dto.message_guid,
            placeholders=placeholders,
            keys=call.services.keys,
            now=now,
        )
    )
    # Under the prefix the client called (/api/v1 or /api), at the address it called.
    prefix = "/api/v1" if call.request.url.path.startswith("/api/v1/") else "/api"
    base = client_base_url(call.request, call.services.settings.forwarded_allow_ips) + prefix

    def upload_uri(guid: str, number: int) -> str:
        return f"{base}/attachments/{guid}/chunk/{number}"

    return PreCreateAttachmentsResponse.of(created, upload_uri)


async def upload_attachment_chunk(call: Call[UploadAttachmentChunkRequest]) -> EmptyResponse:
    dto, body = call.dto, call.body
    content_type = call.request.headers.get("content-type", "")
    store = call.services.runtime.chunk_store()
    # The body is parsed once rule 1 has passed: a bad session answers 811 whatever it holds.
    await call.write(
        lambda session, caller: attachments.store_chunk(
            session,
            caller=caller,
            attachment_guid=dto.attachment_guid,
            number=dto.chunk_number,
            data=uploaded_bytes(body, content_type),
            keys=call.services.keys,
            store=store,
        )
    )
    return EmptyResponse()


async def remove_attachment(call: Call[RemoveAttachmentRequest]) -> EmptyResponse:
    dto = call.dto
    store = call.services.runtime.chunk_store()
    await call.write(
        lambda session, caller: attachments.remove_attachment(
            session,
            caller=caller,
            message_guid=dto.message_guid,
            attachment_guid=dto.attachment_guid,
            store=store,
        )
    )
    return EmptyResponse()


def content_disposition(file_name: str) -> str:
    """`attachment; filename="<name>"`, as the C# SDK cuts the name out of it; a name
    beyond ASCII also as RFC 6266's `filename*` (the plain one then has `_` for the rest)."""
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in file_name)
    if plain == file_name:
        return f'attachment; filename="{plain}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(file_name, safe='')}"


async def download_attachment(call: Call[DownloadAttachmentRequest]) -> Response:
    dto, now = call.dto, clock.now()
    encoded_password = call.request.headers.get(FYEO_PASSWORD_HEADER)
    download = await call.write(
        lambda session, caller: attachments.open_download(
            session,
            caller=caller,
            attachment_guid=dto.attachment_guid,
            fyeo_password=fyeo_password(encoded_password),
            keys=call.services.keys,
            now=now,
        )
    )
    return StreamingResponse(
        _chunks(call, download),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(download.file_name),
            "Content-Length": str(download.size),
        },
    )


async def _chunks(
    call: Call[DownloadAttachmentRequest], download: Download
) -> AsyncIterator[bytes]:
    """The file a chunk at a time, each read in a short transaction of its own, the next
    read while the one before is sent: at most two chunks in memory, no transaction open
    while the client reads."""
    database, store = call.services.database, call.services.runtime.chunk_store()

    def read(number: int) -> asyncio.Future[bytes]:
        chunk = functools.partial(
            attachments.read_chunk, download=download, number=number, store=store
        )
        return asyncio.ensure_future(run_in_threadpool(database.run, chunk, write=False))

    upcoming = read(1) if download.chunk_count else None
    try:
        for number in range(1, download.chunk_count + 1):
            assert upcoming is not None
            current = upcoming
            upcoming = read(number + 1) if number < download.chunk_count else None
            try:
                data = await current
            except LookupError:
                # Removed while it was being downloaded: the response ends short of its
                # Content-Length, which the client sees as an incomplete download.
                logger.warning("an attachment was removed during its download")
                return
            yield data
    finally:
        if upcoming is not None:
            upcoming.cancel()  # the client went away: the read ahead is not wanted


async def get_service_settings(call: Call[Empty]) -> ServiceSettingsResponse:
    limits = await call.read(
        lambda session, caller: attachments.attachment_limits(session, caller=caller)
    )
    return ServiceSettingsResponse.of(limits)


OPERATIONS = (
    Operation(
        "PreCreateAttachments",
        (("POST", "/attachments/precreate"),),
        PreCreateAttachmentsRequest,
        precreate_attachments,
        summary="Make room on a draft for files: how to cut each in chunks, and where to "
        "upload them",
        response=PreCreateAttachmentsResponse,
        errors=(errors.MESSAGE_NOT_FOUND, errors.ALREADY_SENT),
    ),
    Operation(
        "UploadAttachmentChunk",
        (("POST", "/attachments/{attachmentGuid}/chunk/{chunkNumber}"),),
        UploadAttachmentChunkRequest,
        upload_attachment_chunk,
        summary="Upload one chunk of a file: multipart/form-data, the bytes in the part "
        "named 'upload' (the same bytes again change nothing)",
        errors=(errors.MESSAGE_NOT_FOUND, errors.ALREADY_SENT),
        raw_body_limit=UPLOAD_BODY_LIMIT,
    ),
    Operation(
        "RemoveAttachment",
        (
            ("DELETE", "/messages/{messageGuid}/attachments/{attachmentGuid}"),
            # The vendor's DeleteAttachment, as the Java and PHP SDKs remove a file.
            ("DELETE", "/attachments/{attachmentGuid}"),
        ),
        RemoveAttachmentRequest,
        remove_attachment,
        summary="Remove a file from a draft",
        errors=(errors.MESSAGE_NOT_FOUND, errors.ALREADY_SENT),
    ),
    Operation(
        "DownloadAttachment",
        (("GET", "/attachments/{attachmentGuid}"),),
        DownloadAttachmentRequest,
        download_attachment,
        summary="A file's bytes (Content-Disposition names it), for its sender or a "
        "recipient who may read the message",
        file_answer=True,
        errors=(
            errors.MESSAGE_NOT_FOUND,
            errors.MESSAGE_RECALLED,
            errors.EXPIRY_INVALID,
            errors.FYEO_PASSWORD_MISSING,
            errors.FYEO_PASSWORD_WRONG,
            errors.FYEO_LOCKED,
        ),
    ),
    Operation(
        "GetServiceSettings",
        (("GET", "/service/settings"),),
        Empty,
        get_service_settings,
        summary="What the caller may attach: the largest file, the extensions allowed",
        response=ServiceSettingsResponse,
    ),
)
