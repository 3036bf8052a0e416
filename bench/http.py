"""A minimal HTTP/1.1 keep-alive client for the load generator.

The load generator shares the machine's two cores with what it measures, so its own cost
per request is part of every figure. httpx's `AsyncClient` spent 2-3 ms of CPU per
request here (more than the API spends on a GetJob, and ~10 ms at c=64, where its pool
bookkeeping grows with the connections), against ~0.3 ms for this client: one connection
per lane, requests written as bytes, responses read by Content-Length. It speaks only
what the benchmark needs: the API answers every request with a Content-Length body.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed or the server answered something this client cannot read."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # empty when it was dropped (`keep_body=False`)
    size: int  # the body's length, also when it was dropped

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One kept-alive connection; one request at a time."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        keep_body: bool = True,
    ) -> Answer:
        """One request: a `json_body`, or `content` as it is (its Content-Type in
        `headers`); with `keep_body=False` the answer's body is read and dropped."""
        if content is not None:
            body = content
        else:
            body = b"" if json_body is None else json.dumps(json_body).encode()
        head = [f"{method} {path} HTTP/1.1", f"host: {self._host}:{self._port}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if json_body is not None:
            head.append("content-type: application/json")
        head.append(f"content-length: {len(body)}")
        try:
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
            assert self._reader is not None
            # Two writes rather than one concatenation: a chunk's 2 MiB is not copied.
            self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            self._writer.write(body)
            return await self._read_answer(self._reader, keep_body=keep_body)
        except HttpError:
            await self.close()  # the stream is out of step with the requests
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            await self.close()
            raise HttpError(f"{type(e).__name__}: {e}") from e

    async def _read_answer(self, reader: asyncio.StreamReader, *, keep_body: bool) -> Answer:
        header = await reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" not in fields:
            raise HttpError(f"no Content-Length in the answer: {fields}")
        size = int(fields["content-length"])
        body = await reader.readexactly(size) if keep_body else await _drop(reader, size)
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status=status, body=body, size=size)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


async def _drop(reader: asyncio.StreamReader, size: int) -> bytes:
    """Read `size` bytes as they arrive and keep none of them."""
    left = size
    while left:
        piece = await reader.read(min(left, 1 << 20))
        if not piece:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(piece)
    return b""
