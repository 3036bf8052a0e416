"""GetUserSettings: who the caller is, as the vendor's SDKs read it after logging in."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from worker.domain.auth import Caller
from worker.domain.clock import iso_utc
from worker.models import User


def user_settings(session: Session, *, caller: Caller) -> dict[str, Any]:
    """The caller's account: address, state (Active | Disabled | Pending, the vendor's
    spelling), registration date, names and language."""
    user = session.get_one(User, caller.user_id)
    return {
        "emailAddress": user.email,
        "state": user.state.value.capitalize(),
        "registrationDate": iso_utc(user.created_at),
        "firstName": user.first_name,
        "lastName": user.last_name,
        "language": user.locale,
    }
