"""A message's files (SPEC 9): pre-created with their sizes, uploaded a chunk at a time,
removed, frozen by the send, downloaded by whoever may read the message.

A file's bytes are its *content*: chunks numbered from 1, each `CHUNK_BYTES` but the
last, sealed with the content's own data key (`secrets.FileKey`) and kept where a
`ChunkStore` keeps them (the database by default, or a folder every host shares). An
attachment row names its content by `content_key`; a forward's copy names its parent's
(a sent message's files never change), so content is deleted only with the last
attachment that names it.
"""

from __future__ import annotations

import hmac
import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session

from worker.domain import errors
from worker.domain.auth import Caller
from worker.domain.errors import ApiError, FieldError, validation_error
from worker.domain.reading import recipient_delivery
from worker.domain.secrets import FileKey, Keys
from worker.models import (
    Attachment,
    AttachmentChunk,
    Group,
    Message,
    MessageStatus,
    User,
    new_guid,
    table,
)

# The server picks the chunk size (the SDKs slice by what PreCreateAttachments answers):
# 2 MiB, so that an upload holds at most one such chunk in memory and a 25 MB file is 13
# requests.
CHUNK_BYTES = 2 * 1024 * 1024
MAX_FILE_NAME = 255
MAX_FILES_PER_REQUEST = 100
# A chunk's bytes as an upload hands them over: the request's buffer, or a view into it.
ChunkBytes = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A file PreCreateAttachments is asked to make room for."""

    file_name: str
    size: int


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int  # from 1
    start: int
    size: int

    @property
    def end(self) -> int:
        """The first byte after the chunk (the vendor's exclusive `byteEndIndex`)."""
        return self.start + self.size


@dataclass(frozen=True, slots=True)
class PreCreated:
    guid: str
    file_name: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """An attachment as a reader (GetMessage, SearchMessages) or the send sees it."""

    guid: str
    file_name: str
    size: int
    chunk_count: int
    complete: bool

    @property
    def extension(self) -> str:
        return extension_of(self.file_name)

    @property
    def media_type(self) -> str:
        return mimetypes.guess_type(self.file_name, strict=False)[0] or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """A group's limits (fixtures: maxAttachmentBytes, maxMessageBytes, attachmentTypes)."""

    max_file_bytes: int
    max_message_bytes: int
    types: tuple[str, ...]  # allowed extensions, lower case without the dot; () = any

    @classmethod
    def of(cls, group: Group) -> AttachmentLimits:
        return cls(
            max_file_bytes=group.max_attachment_bytes,
            max_message_bytes=group.max_message_bytes,
            types=parse_types(group.attachment_types),
        )


def attachment_limits(session: Session, *, caller: Caller) -> AttachmentLimits:
    """The caller's group's limits (GetServiceSettings)."""
    return AttachmentLimits.of(session.get_one(User, caller.user_id).group)


def parse_types(text: str) -> tuple[str, ...]:
    """`"pdf, .DOCX"` → `("pdf", "docx")`."""
    return tuple(dict.fromkeys(t.strip().lstrip(".").lower() for t in text.split(",") if t.strip()))


def extension_of(file_name: str) -> str:
    """The extension, lower case without the dot ("" for none)."""
    stem, dot, extension = file_name.rpartition(".")
    return extension.lower() if dot and stem else ""


def chunk_plan(size: int, chunk_bytes: int = CHUNK_BYTES) -> tuple[Chunk, ...]:
    """A file of `size` bytes cut in chunks, sorted and contiguous (none for an empty file)."""
    return tuple(
        Chunk(number=index + 1, start=start, size=min(chunk_bytes, size - start))
        for index, start in enumerate(range(0, size, chunk_bytes))
    )


class ChunkStore(Protocol):
    """Where sealed chunks are kept. Every chunk has a row (its digest) in the database;
    the sealed bytes go in the row (`in_rows`) or wherever the store keeps them."""

    in_rows: bool

    def keep(self, content_key: str, number: int, digest: bytes, sealed: bytes) -> None:
        """Keep a chunk's bytes (before its row is written)."""

    def fetch(self, content_key: str, number: int, digest: bytes) -> bytes:
        """A chunk's sealed bytes."""

    def forget(self, session: Session, content_keys: Sequence[str]) -> None:
        """Drop these contents' bytes once `session` commits."""


class RowChunks:
    """The default store: the sealed bytes in the chunk's row."""

    in_rows = True

    def keep(self, content_key: str, number: int, digest: bytes, sealed: bytes) -> None:
        return None

    def fetch(self, content_key: str, number: int, digest: bytes) -> bytes:
        raise LookupError(f"chunk {number} of {content_key} is kept in its row")

    def forget(self, session: Session, content_keys: Sequence[str]) -> None:
        return None


# --- the sender: pre-create, upload, remove ---------------------------------------------


def _own_draft(session: Session, caller: Caller, guid: str) -> Message:
    """The caller's draft `guid`, locked: 929 for anyone else's, 906 once sent."""
    message = session.scalars(
        select(Message).where(Message.guid == guid).with_for_update()
    ).one_or_none()
    if message is None or message.sender_id != caller.user_id:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    if message.status is not MessageStatus.DRAFT:
        raise ApiError(errors.ALREADY_SENT)
    return message


def _refused(index: int, field_name: str, code: str, message: str) -> ApiError:
    return validation_error(
        FieldError(code, f"AttachmentPlaceholders[{index}].{field_name}", message),
        message=message,
    )


def _check_limits(
    placeholders: Sequence[Placeholder], limits: AttachmentLimits, *, already: int
) -> None:
    """Refuse the first file over a limit, naming it and the limit (400)."""
    total = already
    for index, file in enumerate(placeholders):
        name = file.file_name
        if not name.strip() or len(name) > MAX_FILE_NAME or "/" in name or "\\" in name:
            raise _refused(
                index,
                "FileName",
                "Invalid",
                f"'{name[:MAX_FILE_NAME]}' is not a file name: 1 to {MAX_FILE_NAME} "
                "characters, without a path.",
            )
        if limits.types and extension_of(name) not in limits.types:
            raise _refused(
                index,
                "FileName",
                "AttachmentType",
                f"'{name}' is not a type of file your group may send "
                f"(allowed: {', '.join(limits.types)}).",
            )
        if file.size > limits.max_file_bytes:
            raise _refused(
                index,
                "TotalBytesLength",
                "MaxAttachmentBytes",
                f"'{name}' is {file.size} bytes; a file may be at most "
                f"{limits.max_file_bytes} bytes.",
            )
        total += file.size
        if total > limits.max_message_bytes:
            raise _refused(
                index,
                "TotalBytesLength",
                "MaxMessageBytes",
                f"With '{name}' the message's files are {total} bytes; a message's files "
                f"may be at most {limits.max_message_bytes} bytes.",
            )


def precreate_attachments(
    session: Session,
    *,
    caller: Caller,
    message_guid: str,
    placeholders: Sequence[Placeholder],
    keys: Keys,
    now: datetime,
) -> list[PreCreated]:
    """Make room on the caller's draft for these files, within the group's limits, and
    answer how to cut each into chunks. Errors: 929, 906, 400 (a limit, naming the file)."""
    message = _own_draft(session, caller, message_guid)
    limits = attachment_limits(session, caller=caller)
    already = session.scalar(
        select(func.coalesce(func.sum(Attachment.size), 0)).where(
            Attachment.message_id == message.id
        )
    )
    _check_limits(placeholders, limits, already=already or 0)
    created: list[PreCreated] = []
    for file in placeholders:
        content_key = new_guid()
        _, sealed_key = keys.new_file_key(content_key)
        chunks = chunk_plan(file.size)
        attachment = Attachment(
            guid=new_guid(),
            message_id=message.id,
            file_name=file.file_name,
            size=file.size,
            chunk_bytes=CHUNK_BYTES,
            chunk_count=len(chunks),
            chunks_stored=0,
            content_key=content_key,
            sealed_key=sealed_key,
            created_at=now,
        )
        session.add(attachment)
        created.append(PreCreated(guid=attachment.guid, file_name=file.file_name, chunks=chunks))
    return created


def _attachment_of_draft(session: Session, caller: Caller, guid: str) -> Attachment:
    """The attachment `guid` of one of the caller's drafts, locked (a removal waits for
    an upload in progress): 929 for anyone else's, 906 once its message is sent."""
    found = session.execute(
        select(Attachment, Message.sender_id, Message.status)
        .join(Message, Message.id == Attachment.message_id)
        .where(Attachment.guid == guid)
        .with_for_update(of=Attachment)
    ).one_or_none()
    if found is None:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    attachment, sender_id, status = found
    if sender_id != caller.user_id:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    if status is not MessageStatus.DRAFT:
        raise ApiError(errors.ALREADY_SENT)
    return attachment


def _chunk_refused(field_name: str, code: str, message: str) -> ApiError:
    return validation_error(FieldError(code, field_name, message), message=message)


def store_chunk(
    session: Session,
    *,
    caller: Caller,
    attachment_guid: str,
    number: int,
    data: ChunkBytes,
    keys: Keys,
    store: ChunkStore,
) -> None:
    """Keep chunk `number` of a draft's attachment, sealed. The same bytes again change
    nothing; other bytes for a chunk already kept, a number outside the plan or a chunk
    of the wrong size are refused (400). Errors: 929, 906, 400."""
    attachment = _attachment_of_draft(session, caller, attachment_guid)
    plan = chunk_plan(attachment.size, attachment.chunk_bytes)
    if not 1 <= number <= len(plan):
        raise _chunk_refused(
            "ChunkNumber",
            "InclusiveBetween",
            f"'{attachment.file_name}' has chunks 1 to {len(plan)}; there is no chunk {number}.",
        )
    expected = plan[number - 1].size
    if len(data) != expected:
        raise _chunk_refused(
            "Upload",
            "Length",
            f"Chunk {number} of '{attachment.file_name}' is {expected} bytes; "
            f"{len(data)} were uploaded.",
        )
    file_key = keys.open_file_key(attachment.content_key, attachment.sealed_key)
    digest = file_key.digest(data)
    stored = session.scalar(
        select(AttachmentChunk.digest).where(
            AttachmentChunk.content_key == attachment.content_key,
            AttachmentChunk.number == number,
        )
    )
    if stored is not None:
        if not hmac.compare_digest(stored, digest):
            raise _chunk_refused(
                "Upload",
                "Conflict",
                f"Chunk {number} of '{attachment.file_name}' is already uploaded with other bytes.",
            )
        return
    sealed = file_key.seal_chunk(number, data)
    store.keep(attachment.content_key, number, digest, sealed)
    session.execute(
        insert(AttachmentChunk).values(
            content_key=attachment.content_key,
            number=number,
            digest=digest,
            sealed=sealed if store.in_rows else None,
        )
    )
    attachment.chunks_stored += 1


def _forget_unshared(session: Session, content_keys: Iterable[str], store: ChunkStore) -> None:
    """Delete the chunks of these contents that no attachment names any more."""
    unshared = [
        key
        for key in dict.fromkeys(content_keys)
        if not session.scalar(select(exists().where(Attachment.content_key == key)))
    ]
    if unshared:
        session.execute(delete(AttachmentChunk).where(AttachmentChunk.content_key.in_(unshared)))
        store.forget(session, unshared)


def remove_attachment(
    session: Session,
    *,
    caller: Caller,
    message_guid: str | None,
    attachment_guid: str,
    store: ChunkStore,
) -> None:
    """Remove a file from the caller's draft (`message_guid`, or the file's own when not
    given: the vendor's DeleteAttachment), its chunks with it unless a forward shares
    them. The draft is locked as a send locks it: a removal and a send of one draft come
    one after the other. Errors: 929 (not the caller's draft, or no such file on it), 906."""
    if message_guid is None:
        message_guid = session.scalar(
            select(Message.guid)
            .join(Attachment, Attachment.message_id == Message.id)
            .where(Attachment.guid == attachment_guid)
        )
        if message_guid is None:
            raise ApiError(errors.MESSAGE_NOT_FOUND)
    message = _own_draft(session, caller, message_guid)
    attachment = session.scalars(
        select(Attachment).where(
            Attachment.guid == attachment_guid, Attachment.message_id == message.id
        )
    ).one_or_none()
    if attachment is None:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    session.delete(attachment)
    session.flush()
    _forget_unshared(session, [attachment.content_key], store)


def forget_attachments_of(session: Session, message_ids: Sequence[int], store: ChunkStore) -> int:
    """Delete these messages' attachments and the content no other attachment shares
    (retention deleting drafts); the number of attachments deleted."""
    keys = list(
        session.scalars(
            select(Attachment.content_key).where(Attachment.message_id.in_(message_ids))
        )
    )
    session.execute(delete(Attachment).where(Attachment.message_id.in_(message_ids)))
    _forget_unshared(session, keys, store)
    return len(keys)


def copy_for_forward(session: Session, *, parent_id: int, message_id: int, now: datetime) -> None:
    """A forward carries its parent's files: copies that share the parent's content (a
    reply carries none)."""
    for original in session.scalars(
        select(Attachment).where(Attachment.message_id == parent_id).order_by(Attachment.id)
    ):
        session.add(
            Attachment(
                guid=new_guid(),
                message_id=message_id,
                file_name=original.file_name,
                size=original.size,
                chunk_bytes=original.chunk_bytes,
                chunk_count=original.chunk_count,
                chunks_stored=original.chunks_stored,
                content_key=original.content_key,
                sealed_key=original.sealed_key,
                created_at=now,
            )
        )


# --- readers: what a message's files are, and a download -----------------------------


def info_of(attachment: Attachment) -> AttachmentInfo:
    return AttachmentInfo(
        guid=attachment.guid,
        file_name=attachment.file_name,
        size=attachment.size,
        chunk_count=attachment.chunk_count,
        complete=attachment.chunks_stored >= attachment.chunk_count,
    )


_ATTACHMENTS = table(Attachment)
_INFO_OF_MESSAGE = select(
    _ATTACHMENTS.c.guid,
    _ATTACHMENTS.c.file_name,
    _ATTACHMENTS.c.size,
    _ATTACHMENTS.c.chunk_count,
    _ATTACHMENTS.c.chunks_stored >= _ATTACHMENTS.c.chunk_count,
).order_by(_ATTACHMENTS.c.id)


def attachments_of(session: Session, message_id: int) -> tuple[AttachmentInfo, ...]:
    """A message's files, in the order they were pre-created (the send reads them)."""
    rows = session.connection().execute(
        _INFO_OF_MESSAGE.where(_ATTACHMENTS.c.message_id == message_id)
    )
    return tuple(
        AttachmentInfo(guid, name, size, count, bool(complete))
        for guid, name, size, count, complete in rows
    )


def check_complete(attachments: Iterable[AttachmentInfo]) -> None:
    """SendMessage, right after rule 14: every file completely uploaded, else 400 naming
    the files that are not."""
    incomplete = [a for a in attachments if not a.complete]
    if incomplete:
        names = ", ".join(f"'{a.file_name}'" for a in incomplete)
        message = f"Attachments not completely uploaded: {names}."
        raise validation_error(
            *(
                FieldError(
                    "Incomplete",
                    "Attachments",
                    f"'{a.file_name}' is not completely uploaded.",
                    meta={"attachmentGuid": a.guid},
                )
                for a in incomplete
            ),
            message=message,
        )


@dataclass(frozen=True, slots=True)
class Download:
    """A file someone may read, and how to open its chunks."""

    file_name: str
    size: int
    content_key: str
    chunk_count: int
    file_key: FileKey = field(repr=False)


def open_download(
    session: Session,
    *,
    caller: Caller,
    attachment_guid: str,
    fyeo_password: str | None,
    keys: Keys,
    now: datetime,
) -> Download:
    """A file for its message's sender, or for a recipient who may read the message's
    content (as GetMessage with the body: sent, not recalled, not expired, a FYEO
    message's password). Errors: 929, 915, 76, 51, 38, 39; 400 for a file the sender
    has not finished uploading."""
    found = session.execute(
        select(Attachment, Message)
        .join(Message, Message.id == Attachment.message_id)
        .where(Attachment.guid == attachment_guid)
    ).one_or_none()
    if found is None:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    attachment, message = found
    if message.sender_id != caller.user_id:
        recipient_delivery(
            session,
            message,
            user_id=caller.user_id,
            content=True,
            fyeo_password=fyeo_password,
            now=now,
        )
    info = info_of(attachment)
    if not info.complete:
        raise _chunk_refused(
            "AttachmentGuid",
            "Incomplete",
            f"'{attachment.file_name}' is not completely uploaded.",
        )
    return Download(
        file_name=attachment.file_name,
        size=attachment.size,
        content_key=attachment.content_key,
        chunk_count=attachment.chunk_count,
        file_key=keys.open_file_key(attachment.content_key, attachment.sealed_key),
    )


# On PostgreSQL a chunk is fetched in binary: in text a bytea travels hex-encoded (twice
# its size, encoded by the server and decoded here), which cost 7 ms of a 2 MiB chunk's
# 13 (docs/performance.md).
_CHUNK_SQL = "SELECT digest, sealed FROM attachment_chunks WHERE content_key = %s AND number = %s"


def _chunk_row(
    session: Session, content_key: str, number: int
) -> tuple[bytes, bytes | None] | None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]
            cursor.execute(_CHUNK_SQL, (content_key, number))
            found = cursor.fetchone()
    else:
        found = session.execute(
            select(AttachmentChunk.digest, AttachmentChunk.sealed).where(
                AttachmentChunk.content_key == content_key, AttachmentChunk.number == number
            )
        ).one_or_none()
    if found is None:
        return None
    digest, sealed = found
    return bytes(digest), None if sealed is None else bytes(sealed)


def read_chunk(session: Session, *, download: Download, number: int, store: ChunkStore) -> bytes:
    """Chunk `number` of a download, opened. Raises LookupError when it is gone (the
    file was removed since the download began)."""
    row = _chunk_row(session, download.content_key, number)
    if row is None:
        raise LookupError(f"chunk {number} of an attachment is gone")
    digest, sealed = row
    if sealed is None:
        sealed = store.fetch(download.content_key, number, digest)
    return download.file_key.open_chunk(number, sealed)
