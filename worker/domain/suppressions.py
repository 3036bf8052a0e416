"""The suppression list (SPEC 8): addresses no email goes to.

An address is suppressed by an operator (`securesend suppressions add`), or, with the
bounces, by a hard bounce (for SUPPRESSION_DAYS) or a complaint (until removed). A send
to a suppressed address still delivers the secure message; it queues no email there, and
the email's delivery record says `suppressed` with the reason (worker.domain.emails). A
removal is recorded (who, when), never deleted, so the list's history stays readable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from worker.domain.auth import normalize_email
from worker.models import Suppression

SOURCES = ("manual", "bounce", "complaint")


@dataclass(frozen=True, slots=True)
class Entry:
    address: str
    source: str
    reason: str
    created_at: datetime
    expires_at: datetime | None  # None: until removed


def _active(now: datetime) -> ColumnElement[bool]:
    return Suppression.removed_at.is_(None) & or_(
        Suppression.expires_at.is_(None), Suppression.expires_at > now
    )


def suppressed_among(session: Session, emails: Iterable[str], *, now: datetime) -> dict[str, str]:
    """The case-folded `emails` that are suppressed now, each with its reason."""
    wanted = sorted(set(emails))
    if not wanted:
        return {}
    rows = session.execute(
        select(Suppression.address, Suppression.source, Suppression.reason)
        .where(Suppression.address.in_(wanted), _active(now))
        .order_by(Suppression.id)
    )
    return {address: suppression_reason(source, reason) for address, source, reason in rows}


def suppression_reason(source: str, reason: str) -> str:
    """What an email's delivery record says of a suppressed address."""
    return f"suppressed ({source}): {reason}".rstrip(": ")


def suppress(
    session: Session,
    address: str,
    *,
    source: str,
    reason: str,
    now: datetime,
    days: int | None = None,
) -> Entry:
    """Suppress `address` (for `days`, or until removed). An address already suppressed
    keeps its entry, lengthened if this one lasts longer."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    email = normalize_email(address)
    expires = now + timedelta(days=days) if days is not None else None
    current = session.scalars(
        select(Suppression).where(Suppression.address == email, _active(now))
    ).first()
    if current is None:
        current = Suppression(
            address=email, source=source, reason=reason, created_at=now, expires_at=expires
        )
        session.add(current)
    elif current.expires_at is not None and (expires is None or expires > current.expires_at):
        current.expires_at, current.source, current.reason = expires, source, reason
    session.flush()
    return _entry(current)


def remove(session: Session, address: str, *, by: str, now: datetime) -> int:
    """End every active suppression of `address`, recording who did it; how many ended."""
    ended = session.connection().execute(
        update(Suppression)
        .where(Suppression.address == normalize_email(address), _active(now))
        .values(removed_at=now, removed_by=by)
    )
    return int(ended.rowcount or 0)


def active_entries(session: Session, *, now: datetime) -> list[Entry]:
    """Every address suppressed now, oldest first."""
    rows = session.scalars(select(Suppression).where(_active(now)).order_by(Suppression.id))
    return [_entry(row) for row in rows]


def _entry(row: Suppression) -> Entry:
    return Entry(
        address=row.address,
        source=row.source,
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )
