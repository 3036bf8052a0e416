"""Replaying a client's requests byte for byte: the method, the URL exactly as its code
builds it (double slashes and percent-encoding included), its headers and its body bytes,
and reading the answer only the way that client reads it."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import Stack


@dataclass
class Answer:
    status: int
    content_type: str
    body: Any  # the parsed JSON, or None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class ReplayClient:
    """One client's connection: `headers` go with every request, as its code sets them."""

    stack: Stack
    headers: dict[str, str] = field(default_factory=dict)

    def send(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """The request, with the answer's body parsed as JSON (None when empty)."""
        response = self.exchange(method, target, body, headers)
        content_type = response.headers.get("content-type", "")
        parsed = json.loads(response.content) if response.content else None
        return Answer(response.status_code, content_type, parsed)

    def exchange(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The request and the answer as it came (headers, bytes). `target` is a path and
        query on the stack, or an absolute URL (an `uploadUri` the server handed out)."""
        with httpx.Client(timeout=60) as client:
            request = client.build_request(
                method, self._url(target), content=body, headers={**self.headers, **(headers or {})}
            )
            return client.send(request)

    def _url(self, target: str) -> httpx.URL:
        # A raw target keeps `//` and the client's own percent-encoding as they are.
        origin = self.stack.url("")
        if target.startswith(("http://", "https://")):
            scheme, rest = target.split("://", 1)
            host, slash, path = rest.partition("/")
            origin, target = f"{scheme}://{host}", slash + path
        return httpx.URL(origin).copy_with(raw_path=target.encode("ascii"))


def compact_json(value: Any) -> bytes:
    """JSON as Jackson and ServiceStack write it: compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --- attachments --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    """A file on the client's disk, as an SDK is handed it: its name and its bytes."""

    name: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def attachment_files() -> tuple[LocalFile, LocalFile]:
    """The two files of every attachment flow: a small PDF, and 5 MiB and a bit of random
    bytes (several chunks, the last one short)."""
    small = LocalFile("report.pdf", b"%PDF-1.4\n" + secrets.token_bytes(40_000))
    large = LocalFile("archive.bin", secrets.token_bytes(5 * 1024 * 1024 + 12_345))
    return small, large


@dataclass(frozen=True)
class FormPart:
    """One part of a multipart/form-data body: its header lines in the order the client
    writes them, and its bytes."""

    headers: tuple[tuple[str, str], ...]
    content: bytes


def form_disposition(name: str, filename: str | None = None, *, spaced: bool = True) -> str:
    """`form-data; name="upload"; filename="a.pdf"` (Spring, Guzzle), or without the spaces
    (`form-data;name="upload";filename="a.pdf"`, ServiceStack's clients)."""
    separator = "; " if spaced else ";"
    value = f'form-data{separator}name="{name}"'
    return value + (f'{separator}filename="{filename}"' if filename is not None else "")


def multipart_body(parts: Sequence[FormPart], *, boundary: str, closing_crlf: bool) -> bytes:
    """The bytes of a multipart body: each part as `--boundary`, its header lines, a blank
    line, its bytes and CRLF; then `--boundary--`, with a CRLF after it or not (ServiceStack
    writes none)."""
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in part.headers:
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + part.content + b"\r\n"
    out += f"--{boundary}--".encode() + (b"\r\n" if closing_crlf else b"")
    return bytes(out)
