"""Inviting recipients who are not users yet (SPEC 3.2): Pending users and invitations."""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain.notifications import NotificationOutbox
from worker.domain.rules import SendContext
from worker.domain.secrets import hash_password, new_token, token_digest
from worker.models import Group, Invitation, User, UserState

INVITEE_GROUP = "default"


def _invitee_group(session: Session, sender: User) -> Group:
    # Invited people join the `default` group, not the sender's package; a deployment
    # without one puts them in the sender's group.
    group = session.scalars(select(Group).where(Group.name == INVITEE_GROUP)).one_or_none()
    return group or sender.group


def invite_new_users(ctx: SendContext, *, outbox: NotificationOutbox) -> dict[str, User]:
    """Create a Pending user, an invitation and an invitation email per new address.

    The registration token and the CRA code are stored only as hashes; the token reaches
    the invitee only inside the (sealed) invitation email. Returns the new users by email.
    """
    if not ctx.new_addresses:
        return {}
    session = ctx.session
    group = _invitee_group(session, ctx.sender)
    users = {
        a.email: User(email=a.email, group_id=group.id, state=UserState.PENDING, created_at=ctx.now)
        for a in ctx.new_addresses
    }
    session.add_all(users.values())
    session.flush()
    cra_hash = hash_password(ctx.cra_code) if ctx.cra_code else None
    base_url = outbox.settings.public_base_url.rstrip("/")
    for user in users.values():
        token = new_token()
        session.add(
            Invitation(
                user_id=user.id,
                invited_by_id=ctx.sender.id,
                message_id=ctx.message.id,
                token_hash=token_digest(token),
                cra_code_hash=cra_hash,
                created_at=ctx.now,
            )
        )
        outbox.queue_invitation(
            invitee=user,
            message=ctx.message,
            registration_url=f"{base_url}/register?token={quote(token)}",
            cra_required=cra_hash is not None,
        )
    return users
