"""Replaying a client's requests byte for byte: the method, the URL exactly as its code
builds it (double slashes and percent-encoding included), its headers and its body bytes,
and reading the answer only the way that client reads it."""

from __future__ import annotations

import json
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
        path_and_query: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        # A raw target keeps `//` and the client's own percent-encoding as they are.
        url = httpx.URL(self.stack.url("")).copy_with(raw_path=path_and_query.encode("ascii"))
        with httpx.Client(timeout=30) as client:
            request = client.build_request(
                method, url, content=body, headers={**self.headers, **(headers or {})}
            )
            response = client.send(request)
        content_type = response.headers.get("content-type", "")
        parsed = json.loads(response.content) if response.content else None
        return Answer(response.status_code, content_type, parsed)


def compact_json(value: Any) -> bytes:
    """JSON as Jackson and ServiceStack write it: compact, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
