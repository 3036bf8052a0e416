"""GetUserQuotas: what the caller may still send today (UTC)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain.auth import Caller
from worker.models import DailyUsage, User


@dataclass(frozen=True, slots=True)
class DailyQuotas:
    messages_allowed: int
    messages_left: int
    invites_allowed: int
    invites_left: int


def user_quotas(session: Session, *, caller: Caller, now: datetime) -> DailyQuotas:
    group = session.get_one(User, caller.user_id).group
    usage = session.scalars(
        select(DailyUsage).where(DailyUsage.user_id == caller.user_id, DailyUsage.day == now.date())
    ).one_or_none()
    sent, invited = (usage.messages_sent, usage.invites_sent) if usage else (0, 0)
    return DailyQuotas(
        messages_allowed=group.daily_messages,
        messages_left=max(0, group.daily_messages - sent),
        invites_allowed=group.daily_invites,
        invites_left=max(0, group.daily_invites - invited),
    )
