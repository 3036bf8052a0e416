"""The current time, in one place so rules and tests agree on "now" (always UTC), and how
a time is written in an answer."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def iso_utc(value: datetime | None) -> str | None:
    """A time as the API answers it: ISO 8601 in UTC with a `Z` (SPEC 2)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None
