"""GetUserSettings: who the caller is, as the vendor's SDKs read it after logging in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from worker.domain.auth import Caller
from worker.models import User, UserState


@dataclass(frozen=True, slots=True)
class UserSettings:
    """The caller's account: address, state, registration date, names and language."""

    email: str
    state: UserState
    registered_at: datetime
    first_name: str
    last_name: str
    locale: str


def user_settings(session: Session, *, caller: Caller) -> UserSettings:
    user = session.get_one(User, caller.user_id)
    return UserSettings(
        email=user.email,
        state=user.state,
        registered_at=user.created_at,
        first_name=user.first_name,
        last_name=user.last_name,
        locale=user.locale,
    )
