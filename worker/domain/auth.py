"""Login (by password or authentication token), logout and session resolution (SPEC 4,
rule 1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.orm import Session

from worker.domain import errors
from worker.domain.errors import ApiError
from worker.domain.secrets import Keys, new_token, verify_password
from worker.models import AuthenticationToken, User, UserSession, UserState

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
# last_seen_at is written at most this often, so a busy client does not write per request.
SESSION_TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class LoginResult:
    session_token: str
    user_guid: str


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user behind a request."""

    user_id: int
    user_guid: str
    session_id: int
    # The session's idle timer is due a refresh: `touch_session`, in a transaction of its
    # own (which a failing operation does not roll back, and a read-only one need not hold).
    touch_due: bool = False


def normalize_email(address: str) -> str:
    return address.strip().casefold()


def _check_can_log_in(user: User) -> None:
    if user.state is UserState.DISABLED:
        raise ApiError(errors.USER_DISABLED)
    if user.state is UserState.PENDING:
        # A pending user has not registered yet and has no password to log in with.
        raise ApiError(errors.INVALID_CREDENTIALS)


def _open_session(session: Session, user: User, now: datetime, keys: Keys) -> LoginResult:
    token = new_token()
    session.add(
        UserSession(
            token_hash=keys.token_digest(token), user_id=user.id, created_at=now, last_seen_at=now
        )
    )
    return LoginResult(session_token=token, user_guid=user.guid)


def login(
    session: Session, *, username: str, password: str, now: datetime, keys: Keys
) -> LoginResult:
    """Check credentials and open a session.

    Five failures in a row lock the account for 15 minutes, also against the right
    password; a wrong password is counted even though it raises (`keep_changes`).
    Errors: 810, 803, 918, 55.
    """
    user = session.scalars(
        select(User).where(User.email == normalize_email(username)).with_for_update()
    ).one_or_none()
    if user is None:
        raise ApiError(errors.USER_NOT_FOUND)
    if user.locked_until is not None and user.locked_until > now:
        raise ApiError(errors.LOGIN_LOCKED)
    if not verify_password(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED_LOGINS:
            user.failed_logins = 0
            user.locked_until = now + LOCKOUT
        raise ApiError(errors.INVALID_CREDENTIALS, keep_changes=True)
    _check_can_log_in(user)
    user.failed_logins = 0
    user.locked_until = None
    return _open_session(session, user, now, keys)


def new_authentication_token(
    session: Session, *, caller: Caller, valid_for: timedelta, now: datetime, keys: Keys
) -> str:
    """A long-lived token that opens sessions of the caller's (`authenticate`) until
    `now + valid_for` or until it is expired. Only its HMAC is stored."""
    token = new_token()
    session.add(
        AuthenticationToken(
            token_hash=keys.token_digest(token),
            user_id=caller.user_id,
            created_at=now,
            expires_at=now + valid_for,
        )
    )
    return token


def authenticate(session: Session, *, token: str, now: datetime, keys: Keys) -> LoginResult:
    """Open a session with an authentication token. Errors: 803 (unknown, expired or
    revoked token; a user no longer active), 918 (disabled user)."""
    user = session.scalars(
        select(User)
        .join(AuthenticationToken, AuthenticationToken.user_id == User.id)
        .where(
            AuthenticationToken.token_hash == keys.token_digest(token),
            AuthenticationToken.expires_at > now,
        )
    ).one_or_none()
    if user is None:
        raise ApiError(errors.INVALID_CREDENTIALS)
    _check_can_log_in(user)
    return _open_session(session, user, now, keys)


def expire_authentication_token(
    session: Session, *, caller: Caller, token: str, keys: Keys
) -> None:
    """Revoke one of the caller's authentication tokens; another user's, or an unknown
    one, is left alone (idempotent)."""
    session.execute(
        delete(AuthenticationToken).where(
            AuthenticationToken.token_hash == keys.token_digest(token),
            AuthenticationToken.user_id == caller.user_id,
        )
    )


def expire_authentication_tokens(session: Session, *, caller: Caller) -> None:
    """Revoke every authentication token of the caller's."""
    session.execute(
        delete(AuthenticationToken).where(AuthenticationToken.user_id == caller.user_id)
    )


@dataclass(frozen=True, slots=True)
class SessionKey:
    """What rule 1 looks a session up by: its token's digest, and the time after which it
    must have been active to be alive (`now - idle`)."""

    token_hash: str
    seen_after: datetime
    now: datetime


def session_key(token: str | None, *, now: datetime, idle: timedelta, keys: Keys) -> SessionKey:
    """The lookup for `token`; ApiError 811 when there is none."""
    if not token:
        raise ApiError(errors.SESSION_INVALID)
    return SessionKey(token_hash=keys.token_digest(token), seen_after=now - idle, now=now)


# A live session's columns, as rule 1 reads them: on its own (`find_caller`, built once,
# run through Core), or as the first part of a statement that goes on with the caller
# (worker.domain.jobs.open_send_job_as).
LIVE_SESSION = (
    select(
        UserSession.id.label("session_id"),
        UserSession.last_seen_at,
        User.id.label("user_id"),
        User.guid.label("user_guid"),
    )
    .join(User, User.id == UserSession.user_id)
    .where(
        UserSession.token_hash == bindparam("token_hash"),
        UserSession.ended_at.is_(None),
        User.state == UserState.ACTIVE,
        UserSession.last_seen_at > bindparam("seen_after", type_=UserSession.last_seen_at.type),
    )
)


def live_session_params(key: SessionKey) -> dict[str, object]:
    return {"token_hash": key.token_hash, "seen_after": key.seen_after}


def caller_of(row: Sequence[Any] | None, *, now: datetime) -> Caller:
    """The caller of a `LIVE_SESSION` row (session id, last seen, user id and guid);
    ApiError 811 for no row (a token unknown, idle-expired or logged out, or a user no
    longer active). `Caller.touch_due` says when the idle timer wants a refresh (at most
    once a minute)."""
    if row is None:
        raise ApiError(errors.SESSION_INVALID)
    session_id, last_seen_at, user_id, user_guid = row
    return Caller(
        user_id=user_id,
        user_guid=user_guid,
        session_id=session_id,
        touch_due=now - last_seen_at >= SESSION_TOUCH_INTERVAL,
    )


def find_caller(connection: Connection, key: SessionKey) -> Caller:
    """Rule 1: the caller behind a session, in one read (ApiError 811, `caller_of`)."""
    row = connection.execute(LIVE_SESSION, live_session_params(key)).one_or_none()
    return caller_of(row, now=key.now)


def resolve_session(
    connection: Connection, *, token: str | None, now: datetime, idle: timedelta, keys: Keys
) -> Caller:
    """The caller behind a session token (`find_caller`). Only reads. Raises ApiError 811
    for a missing, unknown, idle-expired or logged-out token, or one whose user is no
    longer active."""
    return find_caller(connection, session_key(token, now=now, idle=idle, keys=keys))


def touch_session(session: Session, *, session_id: int, now: datetime) -> None:
    """Restart a session's idle timer."""
    session.execute(
        update(UserSession).where(UserSession.id == session_id).values(last_seen_at=now)
    )


def logout(session: Session, *, caller: Caller, now: datetime) -> None:
    """End the caller's session; the token answers 811 from now on."""
    session.execute(
        update(UserSession).where(UserSession.id == caller.session_id).values(ended_at=now)
    )
