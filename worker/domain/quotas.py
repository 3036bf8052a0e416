"""GetUserQuotas: what the caller may still send today (UTC)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain.auth import Caller
from worker.models import DailyUsage, User


def user_quotas(session: Session, *, caller: Caller, now: datetime) -> dict[str, Any]:
    group = session.get_one(User, caller.user_id).group
    usage = session.scalars(
        select(DailyUsage).where(DailyUsage.user_id == caller.user_id, DailyUsage.day == now.date())
    ).one_or_none()
    sent, invited = (usage.messages_sent, usage.invites_sent) if usage else (0, 0)
    return {
        "dailyMessagesAllowed": group.daily_messages,
        "dailyMessagesLeft": max(0, group.daily_messages - sent),
        "dailyInvitesAllowed": group.daily_invites,
        "dailyInvitesLeft": max(0, group.daily_invites - invited),
    }
