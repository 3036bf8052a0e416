"""Complex values in a query string, read the way ServiceStack reads them (SPEC 2).

ServiceStack clients write a nested object or a list in one query-string parameter as
JSV (`filter={Types:[Inbox],SearchCriteria:abc}`); the vendor's Java SDK writes a mix of
JSON and JSV (`filter={ "types":[Inbox], "searchCriteria": 'abc'}`); other callers write
JSON. `parse_complex` reads all three: JSON first, then a lenient JSV reader in which
keys and strings may be bare, "double-quoted" (a quote doubled inside, as JSV escapes it)
or 'single-quoted'. Bare values stay strings; the DTO's validation converts them.
"""

from __future__ import annotations

import json
from typing import Any

# Deeper nesting is refused, in a query-string value as in a JSON body (SPEC 2).
MAX_DEPTH = 512
_BARE_END = frozenset(",}]")
_KEY_END = frozenset(":,}")


class JsvError(ValueError):
    """The text is neither JSON nor JSV, or nests deeper than MAX_DEPTH."""


def parse_complex(text: str) -> Any:
    """A query-string value as a Python object (dict, list or str). Raises JsvError."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            value = json.loads(stripped)
        except RecursionError:
            raise JsvError("nested too deeply") from None
        except ValueError:
            pass
        else:
            if nests_deeper_than(value, MAX_DEPTH):
                raise JsvError("nested too deeply")
            return value
    return _Reader(stripped).document()


def nests_deeper_than(data: Any, limit: int) -> bool:
    """Whether lists and objects in `data` nest more than `limit` levels deep."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            pending.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            pending.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


class _Reader:
    """Reads one JSV value with an explicit stack (no recursion, however deep the text)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def fail(self, what: str) -> JsvError:
        return JsvError(f"{what} at position {self.pos}")

    def document(self) -> Any:
        open_containers: list[dict[str, Any] | list[Any]] = []
        keys: list[str] = []  # for each open object, the key its next value goes to
        while True:
            value, opened = self.scalar_or_open()
            if opened is not None:
                if len(open_containers) >= MAX_DEPTH:
                    raise JsvError("nested too deeply")
                open_containers.append(opened)
                if not self.starts_empty(opened, keys):
                    continue  # read its first value
                value = open_containers.pop()
            # Put the value in place, closing every container that ends after it.
            while open_containers:
                container = open_containers[-1]
                if isinstance(container, dict):
                    container[keys.pop()] = value
                else:
                    container.append(value)
                closer = "}" if isinstance(container, dict) else "]"
                if self.peek() == ",":
                    self.pos += 1
                    if isinstance(container, dict):
                        keys.append(self.key())
                    break
                if self.peek() != closer:
                    raise self.fail(f"expected ',' or {closer!r}")
                self.pos += 1
                value = open_containers.pop()
            else:
                if self.peek():
                    raise self.fail("unexpected text")
                return value

    def scalar_or_open(self) -> tuple[Any, dict[str, Any] | list[Any] | None]:
        char = self.peek()
        if char in ("{", "["):
            self.pos += 1
            return None, ({} if char == "{" else [])
        if char in ("'", '"'):
            return self.quoted(char), None
        return self.bare(_BARE_END), None

    def starts_empty(self, container: dict[str, Any] | list[Any], keys: list[str]) -> bool:
        """True (and consumed) when `container` closes at once; else, for an object, its
        first key is read."""
        closer = "}" if isinstance(container, dict) else "]"
        if self.peek() == closer:
            self.pos += 1
            return True
        if isinstance(container, dict):
            keys.append(self.key())
        return False

    def key(self) -> str:
        char = self.peek()
        key = self.quoted(char) if char in ("'", '"') else self.bare(_KEY_END)
        if self.peek() != ":":
            raise self.fail("expected ':'")
        self.pos += 1
        return key

    def quoted(self, quote: str) -> str:
        """A quoted string; the quote doubled stands for itself (JSV's escape)."""
        self.pos += 1
        parts: list[str] = []
        while True:
            end = self.text.find(quote, self.pos)
            if end < 0:
                raise JsvError("unterminated string")
            parts.append(self.text[self.pos : end])
            self.pos = end + 1
            if not self.text.startswith(quote, self.pos):
                return "".join(parts)
            parts.append(quote)
            self.pos += 1

    def bare(self, stops: frozenset[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        return self.text[start : self.pos].strip()
