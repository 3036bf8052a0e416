"""The current time, in one place so rules and tests agree on "now" (always UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
