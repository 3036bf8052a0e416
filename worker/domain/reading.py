"""Who may read a sent message, and what a reader must give: GetMessage and
DownloadAttachment ask the same questions in the same order (SPEC 4 and 9).

A message is the sender's to read at any time; a recipient's once it is sent, while it is
neither recalled nor expired, and, when it is For Your Eyes Only, with its password
(wrong ones counted: five in a row lock it for this reader for 15 minutes).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain import errors
from worker.domain.errors import ApiError
from worker.domain.secrets import verify_password
from worker.models import Delivery, FyeoAttempt, FyeoType, Message, MessageStatus, User

MAX_FYEO_FAILURES = 5
FYEO_LOCKOUT = timedelta(minutes=15)


def check_fyeo_password(message: Message, user: User, password: str) -> None:
    """38 unless `password` opens `message` for `user` (its sender needs none)."""
    if message.fyeo_type is FyeoType.DISABLED or message.sender_id == user.id:
        return
    stored = (
        user.password_hash
        if message.fyeo_type is FyeoType.ACCOUNT_PASSWORD
        else (message.password_hash)
    )
    if not verify_password(stored, password):
        raise ApiError(errors.FYEO_PASSWORD_WRONG)


def _guard_fyeo(
    session: Session, message: Message, user: User, password: str, now: datetime
) -> None:
    """Check a reader's FYEO password, counting wrong ones (kept although the error
    rolls back everything else): the fifth in a row locks this message for this reader
    for 15 minutes (39), also against the right password."""
    attempt = session.scalars(
        select(FyeoAttempt)
        .where(FyeoAttempt.message_id == message.id, FyeoAttempt.user_id == user.id)
        .with_for_update()
    ).one_or_none()
    if attempt is not None and attempt.locked_until is not None and attempt.locked_until > now:
        raise ApiError(errors.FYEO_LOCKED)
    try:
        check_fyeo_password(message, user, password)
    except ApiError as wrong:
        if attempt is None:
            attempt = FyeoAttempt(message_id=message.id, user_id=user.id, failures=0)
            session.add(attempt)
        attempt.failures += 1
        if attempt.failures >= MAX_FYEO_FAILURES:
            attempt.failures, attempt.locked_until = 0, now + FYEO_LOCKOUT
        raise ApiError(wrong.kind, keep_changes=True) from None
    if attempt is not None:
        attempt.failures, attempt.locked_until = 0, None


def recipient_delivery(
    session: Session,
    message: Message,
    *,
    user_id: int,
    content: bool,
    fyeo_password: str | None,
    now: datetime,
) -> Delivery:
    """The delivery that lets `user_id`, not the sender, read `message`; with `content`
    (the body, a file) a FYEO message's password is checked too. Errors: 929 (no
    delivery, or a draft), 915 (recalled), 76 (expired), 51 (FYEO password missing), 38
    (wrong), 39 (too many wrong)."""
    delivery = (
        None
        if message.status is MessageStatus.DRAFT
        else session.scalars(
            select(Delivery).where(Delivery.message_id == message.id, Delivery.user_id == user_id)
        ).one_or_none()
    )
    if delivery is None:
        raise ApiError(errors.MESSAGE_NOT_FOUND)
    if message.status is MessageStatus.RECALLED:
        raise ApiError(errors.MESSAGE_RECALLED)
    if message.expiry_date is not None and message.expiry_date <= now:
        raise ApiError(errors.EXPIRY_INVALID)
    if content and message.fyeo_type is not FyeoType.DISABLED:
        if not fyeo_password:
            raise ApiError(errors.FYEO_PASSWORD_MISSING)
        _guard_fyeo(session, message, session.get_one(User, user_id), fyeo_password, now)
    return delivery
