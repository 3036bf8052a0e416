"""The bytes of an uploaded chunk, from the body its client wrote.

The vendor's SDKs post a chunk as `multipart/form-data` with the bytes in the part named
`upload`, each in its own way: with a part Content-Type or without, `form-data;` with a
space after it or not, the name quoted or not, C# with text parts besides
(`AttachmentGuid`, `ChunkNumber`). A body of any other type is taken as the bytes
themselves (an `application/octet-stream` post). The body is already capped at a chunk
and some headers (`pipeline`), so it is parsed in memory.
"""

from __future__ import annotations

import re

from worker.domain import errors
from worker.domain.attachments import ChunkBytes
from worker.domain.errors import ApiError, FieldError

UPLOAD_PART = "upload"
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]+)"|([^\s;,]+))""", re.IGNORECASE)
_NAME = re.compile(r"""(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^\s;]+))""", re.IGNORECASE)
_FILENAME = re.compile(r"""(?:^|;)\s*filename\*?\s*=""", re.IGNORECASE)


class _Part:
    __slots__ = ("name", "is_file", "start", "end")

    def __init__(self, name: str, is_file: bool, start: int, end: int) -> None:
        self.name, self.is_file, self.start, self.end = name, is_file, start, end


def _refused(message: str) -> ApiError:
    return errors.validation_error(FieldError("Invalid", "Upload", message), message=message)


def _parts(body: bytes | bytearray, boundary: bytes) -> list[_Part]:
    delimiter = b"--" + boundary
    parts: list[_Part] = []
    at = body.find(delimiter)
    if at < 0:
        raise _refused("The multipart body holds no part.")
    while True:
        at += len(delimiter)
        if body.startswith(b"--", at):
            return parts  # the closing delimiter
        line_end = body.find(b"\r\n", at)
        if line_end < 0:
            raise _refused("The multipart body ends in the middle of a part.")
        headers_end = body.find(b"\r\n\r\n", line_end)
        if headers_end < 0:
            raise _refused("A part of the multipart body has no end to its headers.")
        content_start = headers_end + 4
        following = body.find(b"\r\n" + delimiter, content_start - 2)
        if following < 0:
            raise _refused("The multipart body is not closed by its boundary.")
        parts.append(_part(body[line_end + 2 : headers_end], content_start, following))
        at = following + 2


def _part(header_block: bytes | bytearray, start: int, end: int) -> _Part:
    name, is_file = "", False
    for line in header_block.decode("latin-1").split("\r\n"):
        field, _, value = line.partition(":")
        if field.strip().lower() != "content-disposition":
            continue
        named = _NAME.search(value)
        if named:
            name = named.group(1) if named.group(1) is not None else named.group(2)
        is_file = _FILENAME.search(value) is not None
    return _Part(name, is_file, start, max(start, end))


def uploaded_bytes(body: bytes | bytearray, content_type: str) -> ChunkBytes:
    """The chunk in `body`: the part named `upload` (else the only file part) of a
    multipart body, or the whole body of any other type. 400 when a multipart body is
    malformed or holds no such part."""
    if not content_type.lower().lstrip().startswith("multipart/"):
        return body
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise _refused("The multipart Content-Type names no boundary.")
    boundary = (found.group(1) or found.group(2)).encode("latin-1", "replace")
    parts = _parts(body, boundary)
    named = [p for p in parts if p.name.lower() == UPLOAD_PART]
    files = [p for p in parts if p.is_file]
    chosen = named[0] if named else files[0] if len(files) == 1 else None
    if chosen is None:
        raise _refused(f"The multipart body has no part named '{UPLOAD_PART}' with the chunk.")
    return memoryview(body)[chosen.start : chosen.end]  # the chunk, not a copy of it
